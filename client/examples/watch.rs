//! Watch a key or a prefix and print what happens to it, across reconnects.
//!
//! `cargo run --release -p ringline-client --example watch -- ws://127.0.0.1:8080/ws room/{42}/`
//! (a trailing `/` watches the prefix).

use futures_util::StreamExt;
use ringline_client::{ChangeOp, Client, Config, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ringline_client::Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let target = args.next().unwrap_or_else(|| "room/{42}/".into());
    let client = Client::connect(Config::new(&url));
    let mut sub = if target.ends_with('/') {
        client.subscribe_prefix(&target).await?
    } else {
        client.subscribe(&target).await?
    };
    while let Some(event) = sub.next().await {
        match event {
            Event::Snapshot { entries, last } => {
                for e in entries {
                    println!("= {} {}", e.key, String::from_utf8_lossy(&e.value));
                }
                if last {
                    println!("(snapshot complete)");
                }
            }
            Event::Change { key, op, .. } => match op {
                ChangeOp::Put { value, version } => {
                    println!("{key} = {} (v{version})", String::from_utf8_lossy(&value));
                }
                ChangeOp::Delete { .. } => println!("{key} deleted"),
                ChangeOp::Publish { value } => {
                    println!("{key} ! {}", String::from_utf8_lossy(&value));
                }
            },
            Event::Reset { reason } => println!("(reset: {reason}; a fresh snapshot follows)"),
            Event::Ended(e) => {
                println!("(ended: {e})");
                break;
            }
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
