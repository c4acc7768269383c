//! The client: a handle ([`Client`]) whose calls go as commands to one task that owns
//! the connection and the [`Session`], reconnects with jittered exponential backoff,
//! and routes what the server says to the calls waiting for answers and to the
//! subscriptions' streams ([`Subscription`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tracing::debug;
use wire::client::{Request, Response, SubMode, Target, fb, json};

use crate::error::Error;
use crate::session::{Event, Output, Session};

/// A source of fresh tokens: asked before each connection once a token was refused or
/// expired (close 4401, 4419) or is about to be needed again.
pub type TokenSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<String>> + Send>> + Send + Sync>;

/// How to connect and how to behave.
#[derive(Clone)]
pub struct Config {
    /// The edges' (or the balancer's) `/ws` URLs, `ws://host:port/ws`: the first is
    /// tried first; after a failure or a lost connection, the next.
    pub urls: Vec<String>,
    /// A JWT sent on the upgrade (`Authorization: Bearer`).
    pub token: Option<String>,
    /// Asked for a new token when the server refuses or expires the current one.
    pub token_source: Option<TokenSource>,
    /// The first wait before reconnecting; doubled (with jitter) after each failure.
    pub backoff_min: Duration,
    /// The longest wait before reconnecting.
    pub backoff_max: Duration,
    /// A connection up this long resets the backoff.
    pub stable_after: Duration,
    /// Requests that may wait for a connection; past it calls fail with
    /// [`Error::QueueFull`].
    pub queue_limit: usize,
    /// The server's ping interval: nothing heard for two of them and the connection is
    /// taken for dead and replaced.
    pub heartbeat: Duration,
    /// Speak the binary form (flatbuffers, `ringline.v1.fb`) instead of JSON: values
    /// are then any bytes, not only JSON text.
    pub binary: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("urls", &self.urls)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("queue_limit", &self.queue_limit)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for `url`: backoff 100 ms to 10 s, stable after 10 s, 1,000 queued
    /// requests, the server's 25 s heartbeat.
    #[must_use]
    pub fn new(url: &str) -> Self {
        Self {
            urls: vec![url.to_owned()],
            token: None,
            token_source: None,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            stable_after: Duration::from_secs(10),
            queue_limit: 1000,
            heartbeat: Duration::from_secs(25),
            binary: false,
        }
    }
}

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Connecting (first, or again).
    Connecting,
    /// Connected; subscriptions have been sent again from their tokens.
    Connected,
    /// The connection is gone (why); the client will try again.
    Disconnected(String),
    /// The client stopped for good (why).
    Closed(String),
}

type Answer = oneshot::Sender<Result<Response<'static>, Error>>;
type MakeRequest = Box<dyn FnOnce(u64) -> Request<'static> + Send>;

/// What the handle asks of the connection's task.
enum Cmd {
    Request(MakeRequest, Answer),
    Subscribe {
        target: Target<'static>,
        mode: SubMode,
        durable: Option<String>,
        events: mpsc::UnboundedSender<Event>,
        id: oneshot::Sender<u64>,
    },
    Unsubscribe(u64),
    /// The automatic deliveries (inbox, broadcast) go to `events`.
    Inbox(mpsc::UnboundedSender<Event>),
    Close,
}

/// A handle to one logical connection (clone it freely); dropping the last handle and
/// every subscription closes it.
#[derive(Debug, Clone)]
pub struct Client {
    cmds: mpsc::UnboundedSender<Cmd>,
    state: watch::Receiver<State>,
}

/// A subscription's events, as a [`Stream`]; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    events: mpsc::UnboundedReceiver<Event>,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Request(..) => "Request",
            Self::Subscribe { .. } => "Subscribe",
            Self::Unsubscribe(_) => "Unsubscribe",
            Self::Inbox(_) => "Inbox",
            Self::Close => "Close",
        })
    }
}

impl Subscription {
    /// The subscription's id on the connection.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Unsubscribe(self.id));
    }
}

impl Client {
    /// Start connecting with `cfg` (on the current tokio runtime); calls made before
    /// the connection is up wait for it (up to `queue_limit`).
    #[must_use]
    pub fn connect(cfg: Config) -> Self {
        let (cmds, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State::Connecting);
        tokio::spawn(Driver::new(cfg, state_tx).run(rx));
        Self { cmds, state }
    }

    /// The connection's state, to watch.
    #[must_use]
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Send `make`'s request and wait for its answer.
    pub(crate) async fn call(
        &self,
        make: impl FnOnce(u64) -> Request<'static> + Send + 'static,
    ) -> Result<Response<'static>, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Request(Box::new(make), tx))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Subscribe to `target`, in `mode`, durable under `durable` if given.
    pub async fn subscribe_with(
        &self,
        target: Target<'static>,
        mode: SubMode,
        durable: Option<String>,
    ) -> Result<Subscription, Error> {
        let (events, rx) = mpsc::unbounded_channel();
        let (id_tx, id_rx) = oneshot::channel();
        let cmd = Cmd::Subscribe {
            target,
            mode,
            durable,
            events,
            id: id_tx,
        };
        self.cmds.send(cmd).map_err(|_| closed())?;
        let id = id_rx.await.map_err(|_| closed())?;
        Ok(Subscription {
            id,
            events: rx,
            cmds: self.cmds.clone(),
        })
    }

    /// What the server sends without a subscription of ours (as id 0): the user's
    /// inbox (`@user/<subject>`, authenticated connections) and broadcasts (`@all`).
    /// One receiver at a time: a second call replaces the first.
    pub fn inbox(&self) -> Result<Subscription, Error> {
        let (events, rx) = mpsc::unbounded_channel();
        self.cmds.send(Cmd::Inbox(events)).map_err(|_| closed())?;
        Ok(Subscription {
            id: wire::client::AUTO_SUB_ID,
            events: rx,
            cmds: self.cmds.clone(),
        })
    }

    /// Stop: pending calls fail with [`Error::Closed`].
    pub fn close(&self) {
        let _ = self.cmds.send(Cmd::Close);
    }
}

fn closed() -> Error {
    Error::Closed("the client is closed".into())
}

/// How a connection ended.
enum Ending {
    /// Try again after the backoff.
    Later(String),
    /// Try again after a short random wait (the connection was up, and is lost).
    Soon(String),
    /// Try again at once (the server is draining this edge).
    Now(String),
    /// Ask for a new token, then try again.
    Token(String),
    /// Stop for good.
    Stop(String),
}

/// The close codes that end the client: it sent something the server cannot take, and
/// sending it again will not help.
const TERMINAL: [u16; 4] = [1002, 1003, 1007, 1009];

/// The task that owns the connection.
struct Driver {
    cfg: Config,
    state: watch::Sender<State>,
    session: Session,
    answers: HashMap<u64, Answer>,
    subs: HashMap<u64, mpsc::UnboundedSender<Event>>,
    retry: Vec<(Instant, u64)>,
    token: Option<String>,
    closing: bool,
    /// Which of the URLs to try next.
    next_url: usize,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Driver {
    fn new(cfg: Config, state: watch::Sender<State>) -> Self {
        let nonce = format!("{:016x}", rand::random::<u64>());
        Self {
            session: Session::new(cfg.queue_limit, &nonce),
            token: cfg.token.clone(),
            cfg,
            state,
            answers: HashMap::new(),
            subs: HashMap::new(),
            retry: Vec::new(),
            closing: false,
            next_url: 0,
        }
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut backoff = self.cfg.backoff_min;
        loop {
            let _ = self.state.send(State::Connecting);
            let ending = match self.open().await {
                Ok(ws) => {
                    let _ = self.state.send(State::Connected);
                    let up = Instant::now();
                    let ending = self.serve(ws, &mut cmds).await;
                    self.session.disconnected();
                    if up.elapsed() >= self.cfg.stable_after {
                        backoff = self.cfg.backoff_min;
                    }
                    // A lost connection is tried again at once (to the next URL), after
                    // a random part of the shortest backoff: a whole edge's clients
                    // do not all come back in the same instant.
                    match ending {
                        Ending::Later(why) => Ending::Soon(why),
                        other => other,
                    }
                }
                Err(why) => Ending::Later(why),
            };
            let wait = match ending {
                Ending::Stop(why) => return self.stop(why),
                Ending::Now(why) => {
                    let _ = self.state.send(State::Disconnected(why));
                    Duration::ZERO
                }
                Ending::Later(why) => {
                    let _ = self.state.send(State::Disconnected(why));
                    jitter(backoff)
                }
                Ending::Soon(why) => {
                    let _ = self.state.send(State::Disconnected(why));
                    let min = self.cfg.backoff_min.as_millis() as u64;
                    Duration::from_millis(rand::random_range(0..=min))
                }
                Ending::Token(why) => {
                    let Some(source) = self.cfg.token_source.clone() else {
                        return self.stop(why);
                    };
                    self.token = source().await;
                    let _ = self.state.send(State::Disconnected(why));
                    Duration::ZERO
                }
            };
            if !self.wait(wait, &mut cmds).await {
                return self.stop("closed by the application".into());
            }
            backoff = (backoff * 2).min(self.cfg.backoff_max);
        }
    }

    /// Connect and upgrade, to the next URL in turn.
    async fn open(&mut self) -> Result<Ws, String> {
        let n = self.cfg.urls.len().max(1);
        let url = self
            .cfg
            .urls
            .get(self.next_url % n)
            .cloned()
            .ok_or("no URL to connect to")?;
        // A connection that fails or is lost moves to the next URL.
        self.next_url = (self.next_url + 1) % n;
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let headers = req.headers_mut();
        let protocol = if self.cfg.binary {
            "ringline.v1.fb"
        } else {
            // v1 with changes in the compact form; `decode_response` reads both.
            "ringline.v2.json"
        };
        headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        if let Some(t) = &self.token {
            let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?;
            headers.insert("Authorization", v);
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ws)
    }

    /// Wait `wait` while queueing the application's calls; false if it closed.
    async fn wait(&mut self, wait: Duration, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> bool {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                cmd = cmds.recv() => match cmd {
                    None | Some(Cmd::Close) => return false,
                    Some(cmd) => {
                        // Nothing is sent while disconnected: everything is queued.
                        let _ = self.command(cmd);
                    }
                },
            }
        }
    }

    /// Serve one connection until it ends.
    async fn serve(&mut self, mut ws: Ws, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> Ending {
        let binary = self.cfg.binary;
        for req in self.session.connected() {
            if send(&mut ws, &req, binary).await.is_err() {
                return Ending::Later("send failed".into());
            }
        }
        let dead = self.cfg.heartbeat * 2;
        loop {
            let retry_at = self.retry.iter().map(|r| r.0).min();
            tokio::select! {
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else {
                        let _ = ws.close(None).await;
                        return Ending::Stop("closed by the application".into());
                    };
                    for req in self.command(cmd) {
                        if send(&mut ws, &req, binary).await.is_err() {
                            return Ending::Later("send failed".into());
                        }
                    }
                    if self.closing {
                        let _ = ws.close(None).await;
                        return Ending::Stop("closed by the application".into());
                    }
                }
                msg = tokio::time::timeout(dead, ws.next()) => {
                    let msg = match msg {
                        Err(_) => return Ending::Later("no message or ping in two heartbeats".into()),
                        Ok(None) => return Ending::Later("connection ended".into()),
                        Ok(Some(Err(e))) => return Ending::Later(e.to_string()),
                        Ok(Some(Ok(m))) => m,
                    };
                    if let Some(ending) = self.message(msg, &mut ws).await {
                        return ending;
                    }
                }
                () = sleep_until_opt(retry_at) => {
                    let now = Instant::now();
                    let due: Vec<u64> = self.retry.iter().filter(|r| r.0 <= now).map(|r| r.1).collect();
                    self.retry.retain(|r| r.0 > now);
                    for id in due {
                        if let Some(req) = self.session.resubscribe(id)
                            && send(&mut ws, &req, binary).await.is_err()
                        {
                            return Ending::Later("send failed".into());
                        }
                    }
                }
            }
        }
    }

    /// One frame from the server; `Some` if the connection ends with it.
    async fn message(&mut self, msg: Message, ws: &mut Ws) -> Option<Ending> {
        let decoded = match &msg {
            Message::Text(text) => json::decode_response(text.as_bytes()).map(Response::into_owned),
            Message::Binary(bytes) => fb::decode_response(bytes).map(Response::into_owned),
            Message::Close(frame) => return Some(closed_by_server(frame.as_ref())),
            _ => return None,
        };
        match decoded {
            Ok(resp) => {
                for out in self.session.handle(resp) {
                    self.route(out);
                }
                None
            }
            Err(e) => {
                let _ = ws.close(None).await;
                Some(Ending::Stop(format!(
                    "the server sent what this client cannot read: {e}"
                )))
            }
        }
    }

    /// A call of the application: what to send now.
    fn command(&mut self, cmd: Cmd) -> Vec<Request<'static>> {
        match cmd {
            Cmd::Request(make, answer) => match self.session.request(make) {
                Ok((id, now)) => {
                    self.answers.insert(id, answer);
                    now.into_iter().collect()
                }
                Err(e) => {
                    let _ = answer.send(Err(e));
                    Vec::new()
                }
            },
            Cmd::Subscribe {
                target,
                mode,
                durable,
                events,
                id,
            } => {
                let (sid, now) = self.session.subscribe(target, mode, durable);
                self.subs.insert(sid, events);
                let _ = id.send(sid);
                now.into_iter().collect()
            }
            Cmd::Unsubscribe(id) => {
                self.subs.remove(&id);
                self.session.unsubscribe(id).into_iter().collect()
            }
            Cmd::Inbox(events) => {
                self.subs.insert(wire::client::AUTO_SUB_ID, events);
                Vec::new()
            }
            Cmd::Close => {
                self.closing = true;
                Vec::new()
            }
        }
    }

    /// Deliver one output of the session.
    fn route(&mut self, out: Output) {
        match out {
            Output::Answer(id, result) => {
                if let Some(a) = self.answers.remove(&id) {
                    let _ = a.send(result);
                }
            }
            Output::Event(id, event) => {
                let ended = matches!(event, Event::Ended(_));
                if let Some(tx) = self.subs.get(&id) {
                    let _ = tx.send(event);
                }
                if ended {
                    self.subs.remove(&id);
                }
            }
            Output::RetryLater(id) => {
                self.retry
                    .push((Instant::now() + Duration::from_secs(1), id));
            }
        }
    }

    /// Stop for good: every waiting call fails, every subscription ends.
    fn stop(mut self, why: String) {
        for (_, a) in self.answers.drain() {
            let _ = a.send(Err(Error::Closed(why.clone())));
        }
        for (_, tx) in self.subs.drain() {
            let _ = tx.send(Event::Ended(Error::Closed(why.clone())));
        }
        let _ = self.state.send(State::Closed(why));
    }
}

/// What a close frame from the server means for the client.
fn closed_by_server(
    frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>,
) -> Ending {
    let (code, reason) = frame.map_or((1005, String::new()), |f| {
        (u16::from(f.code), f.reason.to_string())
    });
    debug!(code, %reason, "closed by the server");
    let why = format!("closed by the server: {code} {reason}");
    match code {
        1001 => Ending::Now(why),
        4401 | 4419 => Ending::Token(why),
        c if TERMINAL.contains(&c) => Ending::Stop(why),
        _ => Ending::Later(why),
    }
}

/// Send `req` as one frame: binary (flatbuffers) or text (JSON).
async fn send(
    ws: &mut Ws,
    req: &Request<'_>,
    binary: bool,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut out = Vec::new();
    if binary {
        fb::encode_request(req, &mut out);
        return ws.send(Message::Binary(out.into())).await;
    }
    json::encode_request(req, &mut out);
    let text = String::from_utf8(out).unwrap_or_default();
    ws.send(Message::Text(text.into())).await
}

/// Sleep until `at`, or forever.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `d` with up to half of it added at random (so that many clients cut off at once do
/// not all come back at once).
fn jitter(d: Duration) -> Duration {
    let half = d.as_millis() as u64 / 2;
    d + Duration::from_millis(rand::random_range(0..=half))
}
