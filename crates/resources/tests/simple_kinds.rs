//! `timer`, `msg` and `noop`: events and outcomes, and what msg logs.

mod common;

use std::io;
use std::sync::{Arc, Mutex};

use common::{Watching, apply, build, check, refresh_ctx};
use resource::Mode;
use resource::Outcome::{Changed, InSync, WouldChange};
use serde_json::json;

#[tokio::test]
async fn timer_ticks_are_events_and_each_makes_one_change() {
    // 2s leaves a loaded machine ample time between a tick and the two check_applies after it.
    let res = build("timer", "t", json!({"interval": "2"}));
    // The first tick is immediate and only says "running".
    let mut w = Watching::start(&res).await;
    assert_eq!(apply(&res).await.unwrap(), InSync);
    w.next_event().await;
    assert_eq!(
        apply(&res).await.unwrap(),
        Changed,
        "a tick since the last check_apply"
    );
    assert_eq!(
        apply(&res).await.unwrap(),
        InSync,
        "no tick since the last check_apply"
    );
    w.next_event().await;
    assert_eq!(check(&res).await.unwrap(), WouldChange);
    assert_eq!(check(&res).await.unwrap(), InSync);
    w.stop().await.unwrap();
}

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn msg_logs_once_until_refreshed() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let res = build(
        "msg",
        "m",
        json!({"body": "hello from msg", "priority": "notice", "fields": {"team": "ops", "n": 1}, "journal": true, "syslog": false}),
    );
    assert_eq!(check(&res).await.unwrap(), WouldChange);
    assert!(
        !captured.text().contains("hello from msg"),
        "check mode logs nothing"
    );
    assert_eq!(apply(&res).await.unwrap(), Changed);
    assert_eq!(apply(&res).await.unwrap(), InSync);
    let text = captured.text();
    assert_eq!(text.matches("hello from msg").count(), 1, "{text}");
    assert!(
        text.contains("INFO")
            && text.contains("Notice")
            && text.contains("team")
            && text.contains("ops"),
        "{text}"
    );
    assert_eq!(
        res.check_apply(&refresh_ctx(), Mode::Apply).await.unwrap(),
        Changed
    );
    assert_eq!(captured.text().matches("hello from msg").count(), 2);
}

#[tokio::test]
async fn noop_is_always_in_sync() {
    let res = build("noop", "n", json!({"comment": "just a join point"}));
    assert_eq!(apply(&res).await.unwrap(), InSync);
    assert_eq!(
        res.check_apply(&refresh_ctx(), Mode::Apply).await.unwrap(),
        InSync
    );
    assert_eq!(check(&res).await.unwrap(), InSync);
    let w = Watching::start(&res).await;
    w.stop().await.unwrap();
}
