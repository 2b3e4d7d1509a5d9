//! Watching a unit through systemd's own signals; nothing here polls, so a quiet system sends
//! us nothing and we send it nothing.
//!
//! Match rules (each registered with the bus, so the bus filters; equal rules of several
//! resources are registered once by zbus and shared):
//! - `PropertiesChanged` of the unit's object, for its `org.freedesktop.systemd1.Unit`
//!   interface: every change of ActiveState/SubState/LoadState (sent only while some client is
//!   subscribed, hence `Subscribe` first);
//! - the manager's `JobRemoved` for this unit (argument 2 is the unit's name): a job ended,
//!   even one that changed no state;
//! - the manager's `UnitFilesChanged`: something was enabled, disabled, masked...;
//! - the manager's `Reloading`: a daemon reload finished (`false`); the unit's object path is
//!   looked up again then, since a reload can make the name an alias of another unit;
//! - the bus's `NameOwnerChanged` for `org.freedesktop.systemd1`: systemd re-executed (or
//!   restarted); once it is back, `Subscribe` again and look the unit up anew (an event).
//!
//! What our own check_apply caused or already read is not reported (`echo` says why and how).
//!
//! The end of any stream means the connection closed: the watch fails and the engine starts it
//! again, which opens a new connection (with a backoff while that fails).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use futures::StreamExt;
use resource::{ResourceError, WatchCtx};
use zbus::message::{Sequence, Type as MessageType};
use zbus::{MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant};

use super::bus::{self, Aliases, Bus, PROPERTIES, SYSTEMD, Systemd, UNIT};
use super::echo::{Echo, Heard};
use super::unit::UnitName;

/// The streams that depend on where systemd serves the unit.
struct UnitStreams {
    path: OwnedObjectPath,
    id: String,
    props: MessageStream,
    jobs: MessageStream,
}

type Lookup<'a> =
    Pin<Box<dyn Future<Output = Result<Option<UnitStreams>, ResourceError>> + Send + 'a>>;

pub(super) async fn watch(
    unit: &UnitName,
    bus: Bus,
    echo: &Echo<Sequence>,
    aliases: &Aliases,
    ctx: WatchCtx,
) -> Result<(), ResourceError> {
    let systemd = Systemd::get(bus).await?;
    let conn = systemd.unique_name();
    let mut owner = systemd.signals(systemd_owner_changed()).await?;
    let mut reloading = systemd.signals(manager_rule("Reloading")).await?;
    let mut files = systemd.signals(manager_rule("UnitFilesChanged")).await?;
    systemd.subscribe().await?;
    let mut streams = open(&systemd, aliases, unit, None)
        .await?
        .expect("opened without a current place");
    ctx.running();
    // Whether a signal is news, or the echo of what our own check_apply did or read.
    let news = |msg: &Message, props: bool| {
        let (state_change, load_state) = if props {
            changed_state(msg)
        } else {
            (None, None)
        };
        echo.heard(Heard {
            conn: conn.clone(),
            position: msg.recv_position(),
            state_change,
            load_state,
        })
    };
    // A lookup after a reload, run while the streams above go on being read.
    let mut lookup: Option<Lookup<'_>> = None;
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            signal = streams.props.next() => {
                if news(&alive(signal)?, true) {
                    ctx.event();
                }
            }
            signal = streams.jobs.next() => {
                if news(&alive(signal)?, false) {
                    ctx.event();
                }
            }
            signal = files.next() => {
                if news(&alive(signal)?, false) {
                    ctx.event();
                }
            }
            signal = reloading.next() => {
                let msg = alive(signal)?;
                // `true` when a reload starts, `false` when it is done: only then look.
                if msg.body().deserialize::<bool>().ok() != Some(true) {
                    if news(&msg, false) {
                        ctx.event();
                    }
                    let current = (streams.path.clone(), streams.id.clone());
                    let systemd = &systemd;
                    lookup = Some(Box::pin(async move { open(systemd, aliases, unit, Some(current)).await }));
                }
            }
            signal = owner.next() => {
                let msg = alive(signal)?;
                let body = msg.body();
                let (_, _, new_owner): (String, String, String) = body
                    .deserialize()
                    .map_err(|e| ResourceError::failed(format!("NameOwnerChanged: {e}")))?;
                // Gone (re-executing, or stopping): wait for it to come back. Back: subscribe
                // again and look the unit up anew.
                if !new_owner.is_empty() {
                    tracing::info!("systemd is back on the bus ({new_owner}): watching {unit} again");
                    systemd.subscribe().await?;
                    let systemd = &systemd;
                    lookup = Some(Box::pin(async move { open(systemd, aliases, unit, None).await }));
                }
            }
            () = echo.ended() => {
                if echo.after_apply() {
                    ctx.event();
                }
            }
            found = async { lookup.as_mut().expect("guarded").await }, if lookup.is_some() => {
                lookup = None;
                if let Some(moved) = found? {
                    tracing::debug!(unit = %unit, path = moved.path.as_str(), id = moved.id, "unit moved after a reload");
                    streams = moved;
                    ctx.event();
                }
            }
        }
    }
}

/// `StateChangeTimestampMonotonic` and `LoadState` of a unit's `PropertiesChanged`, when it
/// carries them.
fn changed_state(msg: &Message) -> (Option<u64>, Option<String>) {
    let body = msg.body();
    let Ok((_, mut changed, _)) =
        body.deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
    else {
        return (None, None);
    };
    (
        bus::take(&mut changed, "StateChangeTimestampMonotonic"),
        bus::take(&mut changed, "LoadState"),
    )
}

fn manager_rule(member: &'static str) -> MatchRule<'static> {
    bus::manager_signal(member)
        .build()
        .expect("a valid match rule")
}

/// Looks the unit up; when it is not at `current` (path and id) any more, or there is no
/// `current`, opens its streams there. `Ok(None)`: it has not moved.
async fn open(
    systemd: &Systemd,
    aliases: &Aliases,
    unit: &UnitName,
    current: Option<(OwnedObjectPath, String)>,
) -> Result<Option<UnitStreams>, ResourceError> {
    let read = aliases.read(systemd, unit).await?;
    let (path, status) = (read.path, read.status);
    let id = if status.id.is_empty() {
        unit.as_str().to_string()
    } else {
        status.id
    };
    if current.is_some_and(|(p, i)| p == path && i == id) {
        return Ok(None);
    }
    let props = systemd.signals(unit_properties_changed(&path)).await?;
    let jobs = systemd.signals(bus::job_removed(&id)).await?;
    Ok(Some(UnitStreams {
        path,
        id,
        props,
        jobs,
    }))
}

/// The next signal; the end of a stream (or an error in it) means the connection is gone.
fn alive(signal: Option<zbus::Result<Message>>) -> Result<Message, ResourceError> {
    match signal {
        Some(Ok(msg)) => Ok(msg),
        Some(Err(e)) => Err(ResourceError::failed(format!("D-Bus: {e}"))),
        None => Err(ResourceError::failed("lost the D-Bus connection")),
    }
}

fn unit_properties_changed(path: &OwnedObjectPath) -> MatchRule<'static> {
    MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SYSTEMD)
        .path(path.clone())
        .interface(PROPERTIES)
        .member("PropertiesChanged")
        .arg(0, UNIT)
        .build()
        .expect("a valid match rule")
}

fn systemd_owner_changed() -> MatchRule<'static> {
    MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.DBus")
        .path("/org/freedesktop/DBus")
        .interface("org.freedesktop.DBus")
        .member("NameOwnerChanged")
        .arg(0, SYSTEMD)
        .build()
        .expect("a valid match rule")
}
