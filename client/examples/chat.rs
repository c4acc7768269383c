//! A chat room: say who is here (presence), read lines from stdin and publish them,
//! print what others say and who joins and leaves.
//!
//! `cargo run --release -p ringline-client --example chat -- ws://127.0.0.1:8080/ws lobby alice`

use futures_util::StreamExt;
use ringline_client::{ChangeOp, Client, Config, Event};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ringline_client::Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let room = args.next().unwrap_or_else(|| "lobby".into());
    let name = args.next().unwrap_or_else(|| "anonymous".into());
    let client = Client::connect(Config::new(&url));
    let channel = format!("chat/{{{room}}}");
    let messages = format!("{channel}/messages");
    let meta = format!(r#"{{"name":{name:?}}}"#);
    client.join(&channel, meta.as_bytes(), None).await?;
    let mut said = client.subscribe(&messages).await?;
    let mut here = client.subscribe_presence(&channel).await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => {
                let Ok(Some(line)) = line else { break };
                let text = format!("{{\"from\":{name:?},\"text\":{line:?}}}");
                client.publish(&messages, text.as_bytes()).await?;
            }
            Some(event) = said.next() => {
                if let Event::Change { op: ChangeOp::Publish { value }, .. } = event {
                    println!("{}", String::from_utf8_lossy(&value));
                }
            }
            Some(event) = here.next() => match event {
                Event::Members { members, .. } => println!("here: {} user(s)", members.len()),
                Event::Presence { events } => {
                    for e in events {
                        let who = e.user.as_deref().unwrap_or("someone");
                        let what = if e.joined.is_some() { "joined" } else { "left" };
                        println!("* {who} {what}");
                    }
                }
                _ => {}
            },
        }
    }
    client.leave(&channel).await
}
