//! systemd's manager over D-Bus: one connection per bus (system, and the user's session bus)
//! shared by every `svc` resource of the process, opened lazily and opened again once it is
//! closed (the bus restarted, systemd re-executed), with a backoff between failed attempts so
//! that a hundred resources whose bus is down make one attempt, not a hundred.
//!
//! The connections live on a runtime of their own, on one thread: zbus ties a connection's
//! socket reader to the runtime it was built on, and the connection outlives any one caller's
//! runtime.
//!
//! A zbus message stream holds up the connection's reader when its queue is full, so every
//! stream opened here is read without pause while it exists (the job wait reads its stream
//! while the call that queues the job is in flight) and dropped as soon as it is not needed.
//! Nothing here runs `systemctl`; only the failure message of a unit reads its log lines with
//! `journalctl`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use resource::{CancellationToken, ResourceError};
use tokio::runtime::Handle;
use tokio::sync::Mutex as AsyncMutex;
use zbus::message::{Sequence, Type as MessageType};
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant, Variant};

use super::echo::Seen;
use super::plan::{Job, ServiceResult, Status};
use super::unit::UnitName;

pub const SYSTEMD: &str = "org.freedesktop.systemd1";
pub const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
pub const MANAGER: &str = "org.freedesktop.systemd1.Manager";
pub const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
pub const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// Longest wait for one method reply. systemd answers at once, except `Reload`, which answers
/// once the reload is done (seconds on a big system); jobs are waited for separately, without
/// a limit.
const METHOD_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits between failed connection attempts: doubling from the first up to the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Signals a stream may queue before the connection waits for it to be read; a stream is read
/// continuously, so this only absorbs bursts (a daemon reload of a big system).
const STREAM_QUEUE: usize = 256;

/// A job still running after this long is logged (once) as slow.
const SLOW_JOB: Duration = Duration::from_secs(30);

/// How many of the unit's last log lines a failure carries.
const LOG_LINES: &str = "10";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bus {
    System,
    /// The user's session bus and its systemd user manager (`systemctl --user`).
    Session,
}

impl Bus {
    fn name(self) -> &'static str {
        match self {
            Bus::System => "system",
            Bus::Session => "session",
        }
    }

    fn slot(self) -> &'static AsyncMutex<Slot> {
        static SYSTEM: AsyncMutex<Slot> = AsyncMutex::const_new(Slot::EMPTY);
        static SESSION: AsyncMutex<Slot> = AsyncMutex::const_new(Slot::EMPTY);
        match self {
            Bus::System => &SYSTEM,
            Bus::Session => &SESSION,
        }
    }
}

/// The shared connection to one bus, and the backoff after failures to open it.
struct Slot {
    conn: Option<Connection>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

impl Slot {
    const EMPTY: Slot = Slot {
        conn: None,
        failures: 0,
        retry_at: None,
        last_error: String::new(),
    };
}

/// The runtime the connections run on: one thread, alive for the rest of the process.
fn runtime() -> Result<&'static Handle, ResourceError> {
    static RUNTIME: OnceLock<Result<Handle, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting the D-Bus runtime: {e}"))?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("mgmt-dbus".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| format!("starting the D-Bus thread: {e}"))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(ResourceError::failed)
}

/// Backoff after `failures` failed attempts in a row (at least one).
pub(super) fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// One read of a unit: where systemd serves it, its state, and where the read was on the
/// connection.
#[derive(Debug)]
pub struct Read {
    pub path: OwnedObjectPath,
    pub status: Status,
    pub seen: Seen<Sequence>,
}

/// The unit a name was last seen to be an alias of. Disabling a unit removes the aliases its
/// `[Install]` section made (Debian's `sshd` for `ssh`): a resource named by such an alias
/// goes on reading the unit it stood for, instead of finding its name gone.
#[derive(Debug, Default)]
pub struct Aliases {
    unit: std::sync::Mutex<Option<UnitName>>,
}

impl Aliases {
    /// Reads `unit`; when it does not exist (any more) but was an alias, reads its unit.
    pub async fn read(&self, systemd: &Systemd, unit: &UnitName) -> Result<Read, ResourceError> {
        let read = systemd.read(unit).await?;
        let remembered = self.unit.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if read.status.load_state == "not-found"
            && let Some(own) = remembered
        {
            let theirs = systemd.read(&own).await?;
            if theirs.status.load_state != "not-found" {
                return Ok(theirs);
            }
        }
        if read.status.load_state != "not-found"
            && !read.status.id.is_empty()
            && read.status.id != unit.as_str()
            && let Ok(own) = UnitName::parse(&read.status.id)
        {
            *self.unit.lock().unwrap_or_else(|e| e.into_inner()) = Some(own);
        }
        Ok(read)
    }
}

/// systemd's manager on one bus, through the shared connection.
#[derive(Clone, Debug)]
pub struct Systemd {
    conn: Connection,
    bus: Bus,
}

impl Systemd {
    /// The shared connection to `bus`: the open one, or a new one when there is none or it
    /// closed (unless the last attempt failed and its backoff has not passed: then its error).
    pub async fn get(bus: Bus) -> Result<Systemd, ResourceError> {
        let mut slot = bus.slot().lock().await;
        if let Some(conn) = slot.conn.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Systemd {
                conn: conn.clone(),
                bus,
            });
        }
        if slot.conn.take().is_some() {
            tracing::info!(bus = bus.name(), "D-Bus connection closed: reconnecting");
        }
        let now = Instant::now();
        if let Some(at) = slot.retry_at.filter(|at| *at > now) {
            return Err(ResourceError::failed(format!(
                "{} (next attempt in {}s)",
                slot.last_error,
                (at - now).as_secs_f64().ceil() as u64
            )));
        }
        let handle = runtime()?;
        let opened = handle
            .spawn(async move {
                let builder = match bus {
                    Bus::System => zbus::connection::Builder::system(),
                    Bus::Session => zbus::connection::Builder::session(),
                };
                builder.method_timeout(METHOD_TIMEOUT).build().await
            })
            .await;
        match opened {
            Ok(Ok(conn)) => {
                slot.failures = 0;
                slot.retry_at = None;
                slot.conn = Some(conn.clone());
                Ok(Systemd { conn, bus })
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(_)) => unreachable!(),
                };
                slot.failures += 1;
                slot.retry_at = Some(now + backoff(slot.failures));
                slot.last_error = format!("cannot connect to the {} bus: {why}", bus.name());
                Err(ResourceError::failed(&slot.last_error))
            }
        }
    }

    fn error(&self, what: &str, e: zbus::Error) -> ResourceError {
        if let zbus::Error::FDO(fdo) = &e
            && matches!(
                **fdo,
                zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
            )
        {
            return ResourceError::failed(format!(
                "systemd is not running on the {} bus ({SYSTEMD} has no owner)",
                self.bus.name()
            ));
        }
        ResourceError::failed(format!("systemd {what}: {e}"))
    }

    async fn call<B>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> Result<Message, ResourceError>
    where
        B: zbus::export::serde::Serialize + zbus::DynamicType,
    {
        self.conn
            .call_method(Some(SYSTEMD), path, Some(interface), method, body)
            .await
            .map_err(|e| self.error(method, e))
    }

    async fn manager<B>(&self, method: &str, body: &B) -> Result<Message, ResourceError>
    where
        B: zbus::export::serde::Serialize + zbus::DynamicType,
    {
        self.call(MANAGER_PATH, MANAGER, method, body).await
    }

    fn decode<T>(&self, what: &str, msg: &Message) -> Result<T, ResourceError>
    where
        T: for<'s> zbus::wire::DynamicDeserialize<'s>,
    {
        let body = msg.body();
        body.deserialize::<T>()
            .map_err(|e| ResourceError::failed(format!("systemd {what}: unexpected reply: {e}")))
    }

    /// Loads the unit if systemd has not (a unit that does not exist is loaded as
    /// `not-found`) and returns its object path, which for an alias is its unit's.
    pub async fn load_unit(&self, unit: &UnitName) -> Result<OwnedObjectPath, ResourceError> {
        let reply = self.manager("LoadUnit", &(unit.as_str(),)).await?;
        self.decode("LoadUnit", &reply)
    }

    async fn properties(
        &self,
        path: &str,
        interface: &str,
    ) -> Result<HashMap<String, OwnedVariant>, ResourceError> {
        let reply = self.call(path, PROPERTIES, "GetAll", &(interface,)).await?;
        self.decode("GetAll", &reply)
    }

    /// The unit's state (one `LoadUnit` and one `GetAll`), and where on the connection the
    /// state was read.
    pub async fn read(&self, unit: &UnitName) -> Result<Read, ResourceError> {
        let path = self.load_unit(unit).await?;
        let reply = self
            .call(path.as_str(), PROPERTIES, "GetAll", &(UNIT,))
            .await?;
        let mut props: HashMap<String, OwnedVariant> = self.decode("GetAll", &reply)?;
        let status = Status {
            id: take(&mut props, "Id").unwrap_or_default(),
            load_state: take(&mut props, "LoadState").unwrap_or_default(),
            load_error: take::<(String, String)>(&mut props, "LoadError").map(|(_, msg)| msg),
            active_state: take(&mut props, "ActiveState").unwrap_or_default(),
            sub_state: take(&mut props, "SubState").unwrap_or_default(),
            unit_file_state: take(&mut props, "UnitFileState").unwrap_or_default(),
            need_daemon_reload: take(&mut props, "NeedDaemonReload").unwrap_or(false),
            can_reload: take(&mut props, "CanReload").unwrap_or(false),
            state_change: take(&mut props, "StateChangeTimestampMonotonic").unwrap_or(0),
            invocation: take::<Vec<u8>>(&mut props, "InvocationID")
                .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
                .unwrap_or_default(),
        };
        let seen = Seen {
            conn: self.unique_name(),
            position: reply.recv_position(),
            state_change: status.state_change,
            load_state: status.load_state.clone(),
        };
        Ok(Read { path, status, seen })
    }

    /// Our name on the bus (positions of messages compare only within one connection).
    pub fn unique_name(&self) -> String {
        self.conn
            .unique_name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    }

    /// How a service's main process last ended; `None` for another kind of unit.
    pub async fn service_result(&self, path: &str) -> Option<ServiceResult> {
        let mut props = self.properties(path, SERVICE).await.ok()?;
        Some(ServiceResult {
            result: take(&mut props, "Result").unwrap_or_default(),
            exec_main_code: take(&mut props, "ExecMainCode").unwrap_or(0),
            exec_main_status: take(&mut props, "ExecMainStatus").unwrap_or(0),
        })
    }

    /// `systemctl daemon-reload`: systemd answers once the reload is done.
    pub async fn daemon_reload(&self) -> Result<(), ResourceError> {
        self.manager("Reload", &()).await.map(drop)
    }

    /// Creates the unit's `[Install]` symlinks in /etc (not forced over other files); returns
    /// the changes made, as `(type, link, target)`.
    pub async fn enable(&self, unit: &str) -> Result<Vec<(String, String, String)>, ResourceError> {
        let reply = self
            .manager("EnableUnitFiles", &(vec![unit], false, false))
            .await?;
        let (_carries_install_info, changes): (bool, Vec<(String, String, String)>) =
            self.decode("EnableUnitFiles", &reply)?;
        Ok(changes)
    }

    /// Removes the unit's `[Install]` symlinks, from /run when `runtime`, else from /etc.
    pub async fn disable(
        &self,
        unit: &str,
        runtime: bool,
    ) -> Result<Vec<(String, String, String)>, ResourceError> {
        let reply = self
            .manager("DisableUnitFiles", &(vec![unit], runtime))
            .await?;
        self.decode("DisableUnitFiles", &reply)
    }

    /// Asks systemd to send unit and job signals (it sends them only while a client is
    /// subscribed; the subscription ends with our connection).
    pub async fn subscribe(&self) -> Result<(), ResourceError> {
        match self
            .conn
            .call_method(Some(SYSTEMD), MANAGER_PATH, Some(MANAGER), "Subscribe", &())
            .await
        {
            Ok(_) => Ok(()),
            // One subscription per connection: the other resources share it.
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" =>
            {
                Ok(())
            }
            Err(e) => Err(self.error("Subscribe", e)),
        }
    }

    /// A stream of the signals `rule` matches (registered with the bus before this returns).
    pub async fn signals(&self, rule: MatchRule<'_>) -> Result<MessageStream, ResourceError> {
        MessageStream::for_match_rule(rule, &self.conn, NonZeroUsize::new(STREAM_QUEUE))
            .await
            .map_err(|e| ResourceError::failed(format!("adding a D-Bus match rule: {e}")))
    }

    /// Queues `job` for `unit` (mode `replace`) and waits for it to finish; returns systemd's
    /// result (`done`, `failed`, `canceled`, `timeout`, `dependency`, `skipped`...).
    /// Cancelling stops the wait, not the job.
    pub async fn run_job(
        &self,
        job: Job,
        unit: &UnitName,
        cancel: &CancellationToken,
    ) -> Result<String, ResourceError> {
        // Subscribed before the job exists, so its end cannot be missed. Every unit's jobs (the
        // job path tells ours): the unit's own name could change under an alias meanwhile.
        let mut removed = self
            .signals(
                manager_signal("JobRemoved")
                    .build()
                    .expect("a valid match rule"),
            )
            .await?;
        let args = (unit.as_str(), "replace");
        let call = self.manager(job.method(), &args);
        tokio::pin!(call);
        // Jobs that ended while the call was in flight (ours may be one).
        let mut ended: Vec<(OwnedObjectPath, String)> = Vec::new();
        let path: OwnedObjectPath = loop {
            tokio::select! {
                reply = &mut call => break self.decode(job.method(), &reply?)?,
                signal = removed.next() => ended.push(job_end(signal)?),
                _ = cancel.cancelled() => return Err(cancelled(job, unit)),
            }
        };
        if let Some((_, result)) = ended.into_iter().find(|(j, _)| *j == path) {
            return Ok(result);
        }
        let slow = tokio::time::sleep(SLOW_JOB);
        tokio::pin!(slow);
        let mut warned = false;
        loop {
            tokio::select! {
                signal = removed.next() => {
                    let (job_path, result) = job_end(signal)?;
                    if job_path == path {
                        return Ok(result);
                    }
                }
                _ = &mut slow, if !warned => {
                    warned = true;
                    tracing::warn!(unit = %unit, job = %path.as_str(), "still {} after {}s", job.doing(), SLOW_JOB.as_secs());
                }
                _ = cancel.cancelled() => return Err(cancelled(job, unit)),
            }
        }
    }

    /// The last log lines of the unit's run `invocation` (its own output and its manager's
    /// messages about it), or of the unit when that is not known; empty when they cannot be
    /// read.
    pub async fn log_tail(&self, unit: &str, invocation: &str) -> Vec<String> {
        let manager_field = match self.bus {
            Bus::System => "INVOCATION_ID",
            Bus::Session => "USER_INVOCATION_ID",
        };
        let args: Vec<String> = if invocation.is_empty() {
            let which = match self.bus {
                Bus::System => "--unit",
                Bus::Session => "--user-unit",
            };
            vec![which.into(), unit.into()]
        } else {
            vec![
                format!("{manager_field}={invocation}"),
                "+".into(),
                format!("_SYSTEMD_INVOCATION_ID={invocation}"),
            ]
        };
        let output = tokio::process::Command::new("journalctl")
            .args(&args)
            .args(["-n", LOG_LINES, "--no-pager", "-o", "cat"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(5), output).await {
            Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty() && *l != "-- No entries --")
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn cancelled(job: Job, unit: &UnitName) -> ResourceError {
    ResourceError::failed(format!(
        "cancelled while {} {unit} (the job goes on in systemd)",
        job.doing()
    ))
}

/// `JobRemoved(id, job, unit, result)` of the manager, for one unit.
pub fn job_removed(id: &str) -> MatchRule<'_> {
    manager_signal("JobRemoved")
        .arg(2, id)
        .build()
        .expect("a valid match rule")
}

/// A signal of systemd's manager object; used as built or with arguments added.
pub fn manager_signal(member: &'static str) -> zbus::match_rule::Builder<'static> {
    MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SYSTEMD)
        .path(MANAGER_PATH)
        .interface(MANAGER)
        .member(member)
}

/// The job path and result of a `JobRemoved` signal; the end of the stream is an error (the
/// connection closed).
fn job_end(
    signal: Option<zbus::Result<Message>>,
) -> Result<(OwnedObjectPath, String), ResourceError> {
    let msg = signal
        .ok_or_else(|| ResourceError::failed("lost the D-Bus connection while waiting for a job"))?
        .map_err(|e| ResourceError::failed(format!("D-Bus: {e}")))?;
    let body = msg.body();
    let (_, job, _, result): (u32, OwnedObjectPath, String, String) = body
        .deserialize()
        .map_err(|e| ResourceError::failed(format!("systemd JobRemoved: unexpected body: {e}")))?;
    Ok((job, result))
}

/// Takes property `key` as a `T`; `None` when it is missing or of another type.
pub fn take<T>(props: &mut HashMap<String, OwnedVariant>, key: &str) -> Option<T>
where
    T: TryFrom<Variant<'static>>,
    <T as TryFrom<Variant<'static>>>::Error: Into<zbus::Error>,
{
    let value = Variant::from(props.remove(key)?);
    value.downcast::<T>().ok()
}
