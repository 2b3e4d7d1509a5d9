//! Helpers shared by the resource tests: building through the registry, contexts, and waiting
//! for events under a deadline (never sleeping to synchronise).

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::time::{Duration, Instant};

use resource::{
    ApplyCtx, CancellationToken, EventSink, Meta, Mode, Outcome, Resource, ResourceError, WatchCtx,
};
use serde_json::Value;

/// Generous: only a broken implementation waits this long.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn build(kind: &str, name: &str, params: Value) -> Arc<dyn Resource> {
    resources::registry()
        .build(kind, name, params, Meta::default())
        .unwrap_or_else(|e| panic!("building {kind}[{name}]: {e}"))
}

pub fn ctx() -> ApplyCtx {
    ApplyCtx {
        refresh: false,
        hostname: "test".into(),
        cancel: CancellationToken::new(),
    }
}

pub fn refresh_ctx() -> ApplyCtx {
    ApplyCtx {
        refresh: true,
        ..ctx()
    }
}

pub async fn apply(res: &Arc<dyn Resource>) -> Result<Outcome, ResourceError> {
    res.check_apply(&ctx(), Mode::Apply).await
}

pub async fn check(res: &Arc<dyn Resource>) -> Result<Outcome, ResourceError> {
    res.check_apply(&ctx(), Mode::Check).await
}

/// A running watch: its events, its cancel token and the task to await after cancelling.
pub struct Watching {
    pub events: resource::EventReceiver,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), ResourceError>>,
}

impl Watching {
    /// Start `res.watch` and wait until it reports running.
    pub async fn start(res: &Arc<dyn Resource>) -> Watching {
        let (sink, events) = EventSink::channel();
        let cancel = CancellationToken::new();
        let ctx = WatchCtx {
            events: sink,
            cancel: cancel.clone(),
            hostname: "test".into(),
        };
        let res = res.clone();
        let task = tokio::spawn(async move { res.watch(ctx).await });
        let mut w = Watching {
            events,
            cancel,
            task,
        };
        w.next_event().await;
        w
    }

    pub async fn next_event(&mut self) {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("no event before the deadline")
            .expect("watch dropped its sink");
    }

    /// Forget events already delivered (e.g. caused by our own check_apply).
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Cancel and wait for the watch to return.
    pub async fn stop(self) -> Result<(), ResourceError> {
        self.cancel.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("watch did not return after cancel")
            .expect("watch panicked")
    }
}

/// Poll `cond` until it holds; panics after the deadline.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
