//! A connection's standing with the verifier, and the `auth` message. In: the identity
//! its upgrade brought (or none), then `auth` messages (a browser's first, or a refresh
//! before expiry); out: whether each request may go on (`unauthorized` before the first
//! `auth` where one is required, `forbidden` past the grant), and one deadline, `auth_by`:
//! the tick a pending connection is closed with 4408, or an authenticated one with 4419
//! when its token expires unrefreshed. A refresh replaces the grant, and the hub ends
//! each subscription the new grant no longer allows with `forbidden`.

use wire::client::{ErrorCode, Request, Response};
use wire::frame::{CloseCode, Opcode};

use super::ws::{FrameLoop, Stop};
use crate::auth::grant::Grant;
use crate::auth::token::{Identity, Verifier};
use crate::worker::timer::{Tick, deadline_after};

/// What the frame loop needs to know of a connection's standing (borrowed from it).
#[derive(Debug)]
pub(super) struct Standing<'a> {
    /// Tokens are checked against this (`None`: auth is off).
    pub(super) verifier: Option<&'a Verifier>,
    /// Who its token says it is (`None`: anonymous or not yet authenticated).
    pub(super) identity: &'a mut Option<Box<Identity>>,
    /// What a connection without a token may touch (auth optional).
    pub(super) anonymous: &'a Grant,
    /// The tick it must (re-)authenticate by; 0: never.
    pub(super) auth_by: &'a mut Tick,
    /// An authenticated connection is subscribed to its user's inbox.
    pub(super) inbox: bool,
}

impl Standing<'_> {
    /// Upgraded without a token where one is required: only `auth` is taken.
    pub(super) fn pending(&self) -> bool {
        self.verifier.is_some() && self.identity.is_none() && *self.auth_by != 0
    }

    /// Whether `req` may go on; if not, the error code and message to answer with.
    pub(super) fn check(&self, req: &Request<'_>) -> Result<(), (ErrorCode, &'static str)> {
        if crate::hub::touches_reserved(req) {
            return Err((
                ErrorCode::Forbidden,
                "keys under @durable/ hold durable subscriptions' positions: not for clients",
            ));
        }
        if self.verifier.is_none() {
            return Ok(());
        }
        if self.pending() {
            return Err((
                ErrorCode::Unauthorized,
                "authenticate first: send {\"op\":\"auth\",\"id\":..,\"token\":..}",
            ));
        }
        let grant = self
            .identity
            .as_ref()
            .map_or(self.anonymous, |id| &id.grant);
        if grant.permits(req) {
            Ok(())
        } else {
            Err((
                ErrorCode::Forbidden,
                "not granted by this connection's token",
            ))
        }
    }
}

impl super::Conn {
    /// Whether the connection's identity (or, without one, the anonymous grant) lets
    /// `req` go on: the check of [`Standing`] for a connection outside a frame loop
    /// (the HTTP API's).
    pub(super) fn permits(
        &mut self,
        req: &Request<'_>,
        ctx: &super::Ctx<'_>,
    ) -> Result<(), (ErrorCode, &'static str)> {
        let mut auth_by = 0;
        let standing = Standing {
            verifier: ctx.auth,
            identity: &mut self.identity,
            anonymous: &ctx.cfg.anonymous,
            auth_by: &mut auth_by,
            inbox: false,
        };
        standing.check(req)
    }
}

/// The tick a token with `secs` of validity left must be refreshed by, seen at `now`
/// (never 0, which means "no deadline"; far deadlines are capped, not wrapped).
pub(super) fn expiry(now: Tick, secs: u64) -> Tick {
    let secs = Tick::try_from(secs).unwrap_or(Tick::MAX).min(Tick::MAX / 2);
    deadline_after(now, secs).max(1)
}

impl FrameLoop<'_> {
    /// A decoded request: `auth` is handled here; the rest go to the hub if the
    /// connection's standing allows, else are answered (the connection stays).
    pub(super) fn request(&mut self, req: Request<'_>, opcode: Opcode) {
        if let Request::Auth { id, token } = req {
            self.on_auth(id, &token, opcode);
            return;
        }
        match self.standing.check(&req) {
            Ok(()) => {
                let subject = self.standing.identity.as_ref().map_or("", |i| i.subject());
                self.hub.request(self.me, req, subject);
            }
            Err((code, message)) => {
                self.denied += 1;
                self.reply(
                    opcode,
                    &Response::Error {
                        id: Some(req.id()),
                        code,
                        message: message.into(),
                        version: None,
                    },
                );
            }
        }
    }

    /// `{"op":"auth"}`: a valid token becomes the connection's identity (and moves its
    /// deadline to the token's expiry); a refused one is answered `unauthorized`, and
    /// closes (4401) a connection that has no identity to fall back on.
    fn on_auth(&mut self, id: u64, token: &str, opcode: Opcode) {
        let Some(verifier) = self.standing.verifier else {
            // Auth is off: tokens are not looked at.
            self.reply(opcode, &ok(id));
            return;
        };
        let refused = match verifier.verify(token) {
            Err(e) => e.reason(),
            Ok(new)
                if self
                    .standing
                    .identity
                    .as_ref()
                    .is_some_and(|old| old.subject() != new.subject()) =>
            {
                "a refresh must keep the connection's subject"
            }
            Ok(new) => {
                *self.standing.auth_by = expiry(self.now, verifier.remaining(&new));
                let grant = &new.grant;
                self.narrowed += self.hub.narrow(self.me, |t| grant.allows_target(t));
                self.hub.narrow_joins(self.me, |c| {
                    grant.allows(crate::auth::grant::Access::Presence, c)
                });
                let first = self.standing.identity.is_none();
                if first && self.standing.inbox {
                    self.hub.open_inbox(self.me, new.subject());
                }
                *self.standing.identity = Some(Box::new(new));
                self.reply(opcode, &ok(id));
                return;
            }
        };
        self.unauthorized += 1;
        self.reply(
            opcode,
            &Response::Error {
                id: Some(id),
                code: ErrorCode::Unauthorized,
                message: refused.into(),
                version: None,
            },
        );
        if self.standing.identity.is_none() {
            self.stop = Some(Stop::Error(CloseCode::UNAUTHORIZED, refused));
        }
    }
}

fn ok(id: u64) -> Response<'static> {
    Response::Ok {
        id,
        version: None,
        token: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_never_early_never_zero_and_never_wraps() {
        assert_eq!(expiry(10, 5), 16);
        assert_eq!(expiry(0, 0), 1);
        assert_eq!(expiry(100, u64::MAX), 100 + Tick::MAX / 2 + 1);
    }
}
