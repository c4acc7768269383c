//! Who a connection is and what it may touch. [`token`] verifies a client's JWT into an
//! [`Identity`](token::Identity) (subject, expiry, grant); [`grant`] compiles a token's
//! permission patterns into a [`Grant`](grant::Grant) that every operation is checked
//! against before it is routed. (Where tokens come from, the checks in the worker and
//! the JWKS reload land next: issue 15.)

pub mod grant;
pub mod token;
