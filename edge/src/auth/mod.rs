//! Who a connection is and what it may touch. [`grant`] compiles a token's permission
//! patterns into a [`Grant`](grant::Grant) that every operation is checked against
//! before it is routed. (Token verification and where tokens come from land here next:
//! issue 15.)

pub mod grant;
