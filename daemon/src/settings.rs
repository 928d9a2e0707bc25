//! The daemon's settings: one tree, defaults in code, a documented lookup order.
//!
//! Lookup order for the config file: `--config FILE`, then `MDL_CONFIG`, then
//! `$XDG_CONFIG_HOME/mdl/config.toml` (`~/.config/mdl/config.toml`) if it exists; otherwise
//! defaults. Unknown keys are an error, so typos do not pass silently.
//!
//! Every path the daemon writes derives from [`Settings::data_dir`] (state) and
//! [`Settings::socket`] (runtime), so a test overrides two paths and nothing else.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

/// The environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "MDL_DATA_DIR";
/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "MDL_CONFIG";
/// Jobs running at once unless the config file or `mdlctl concurrency` say otherwise.
pub const DEFAULT_MAX_CONCURRENT: u32 = 3;

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

/// Everything the daemon needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The socket (or pipe) to listen on.
    pub socket: PathBuf,
    /// Where the store (sled) and logs live.
    pub data_dir: PathBuf,
    /// Where plain URLs go when the add names no destination.
    pub download_dir: PathBuf,
    /// How many jobs may run at once (changeable at runtime).
    pub max_concurrent: u32,
    /// How often a subscriber gets a heartbeat when nothing else happens.
    pub heartbeat_interval: Duration,
    /// The least time between two progress events of one job.
    pub progress_interval: Duration,
    /// How long the daemon waits for downloads to checkpoint on shutdown.
    pub shutdown_grace: Duration,
    /// The most client connections served at once; more are refused with a reason.
    pub max_connections: usize,
    /// Download engine settings.
    pub engine: EngineSettings,
    /// The config file these settings were read from, if any (watched and reloaded).
    pub config_file: Option<PathBuf>,
    /// The drop folder: request files placed here are queued (`watch_dir`; off when unset).
    pub watch_dir: Option<PathBuf>,
    /// What happens to a completed file found missing or modified (`repair`).
    pub repair: RepairMode,
    /// The global bandwidth limit in bytes per second (`bandwidth_limit`; `mdlctl limit`
    /// changes it at runtime).
    pub bandwidth_limit: Option<u64>,
    /// How often directories are rescanned where file-system events do not arrive (network
    /// file systems) and as a safety net everywhere (`watch_poll_secs`).
    pub poll_interval: Duration,
    /// How long a dropped file must keep its size and time stamp before it is taken
    /// (`watch_settle_ms`): a copy still in progress is left alone.
    pub watch_settle: Duration,
    /// Poll every watched directory instead of using file-system events (`watch_mode =
    /// "poll"`; the default `"auto"` polls only on network file systems).
    pub force_poll: bool,
    /// What the config file itself said about the keys `mdlctl` can also change at runtime.
    pub from_file: FileValues,
    /// The web dashboard served from start-up (`[ui]`).
    pub ui: UiSettings,
}

/// What to do about a completed file that was deleted or changed on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairMode {
    /// Mark it `missing` / `modified`; `mdlctl verify` re-hashes and fetches it again.
    #[default]
    Manual,
    /// Mark it, re-hash it and fetch it again without being asked.
    Auto,
}

impl RepairMode {
    /// The config file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairMode::Manual => "manual",
            RepairMode::Auto => "auto",
        }
    }
}

/// The values the config file gave for the keys that `mdlctl` also sets at runtime (`None`:
/// the file does not set the key). The rule between the two: a value set with `mdlctl` wins
/// until the file changes that key (see `Scheduler::apply_file_values`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct FileValues {
    /// `max_concurrent`.
    pub max_concurrent: Option<u32>,
    /// `bandwidth_limit`: `Some(None)` is `"off"`.
    pub bandwidth_limit: Option<Option<u64>>,
    /// The `[sources]` endpoint lists the file sets, by hub (`hf`, `ms`, `civitai`).
    #[serde(default)]
    pub endpoints: std::collections::BTreeMap<String, Vec<String>>,
}

/// A value that is replaced as a whole when the config file is reloaded: readers take a
/// cheap snapshot ([`Live::get`]) and keep using it for one operation, so nobody sees half of
/// an update. The lock is held only to clone or swap the `Arc`.
#[derive(Debug)]
pub struct Live<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Live<T> {
    /// A live value starting at `value`.
    pub fn new(value: T) -> Self {
        Live {
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace the value; snapshots taken before keep the old one.
    pub fn set(&self, value: T) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

/// The web dashboard served by the daemon itself (`[ui]` in the config file), so a service
/// started at login brings the dashboard with it. `mdlctl ui` then only prints a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSettings {
    /// Serve the dashboard (default: no; `mdlctl ui` serves it on demand).
    pub enabled: bool,
    /// Where (default: 127.0.0.1 and [::1], port 7386).
    pub listen: Vec<std::net::SocketAddr>,
}

impl Default for UiSettings {
    fn default() -> Self {
        UiSettings {
            enabled: false,
            listen: mdl_web::default_listen(mdl_web::DEFAULT_PORT),
        }
    }
}

/// Settings of the download engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// The longest a connection may deliver no byte before it is dropped and resumed. Within
    /// it, a connection is stalled after `max(stall_min, 20 × its recent gap between reads)`.
    pub stall_timeout: Duration,
    /// The shortest stall timeout of a connection (however short its gaps between reads).
    pub stall_min: Duration,
    /// Dedupe may hard-link a verified file instead of cloning or copying it. Off by default:
    /// the two paths then share one inode, and editing one corrupts the other's verified copy.
    pub dedupe_hard_links: bool,
    /// How long a request may wait for the response headers once it is sent; a server that
    /// accepts and never answers must not hold a job (and a per-host slot) forever.
    pub response_timeout: Duration,
    /// How many redirects a request may follow.
    pub max_redirects: usize,
    /// Consecutive failed attempts (with no progress in between) before a job fails.
    pub max_attempts: u32,
    /// First backoff delay; doubles per failed attempt, with full jitter.
    pub backoff_base: Duration,
    /// The longest backoff delay.
    pub backoff_max: Duration,
    /// The longest `Retry-After` the daemon waits before trying again.
    pub retry_after_max: Duration,
    /// Bytes fetched between two durable checkpoints of a file's byte ranges.
    pub checkpoint_bytes: u64,
    /// Time between two durable checkpoints while bytes arrive.
    pub checkpoint_interval: Duration,
    /// The User-Agent header.
    pub user_agent: String,
    /// Bytes buffered before a write is handed to the writer thread.
    pub write_buffer_bytes: usize,
    /// Files at least this large are fetched over several connections at once.
    pub segment_threshold: u64,
    /// Connections a segmented file starts with (default; `hosts` may override per host).
    pub segments: u32,
    /// The most connections a segmented file grows to while each one is capped by the server
    /// and more of them bring more throughput (see `engine::growth`; `hosts` may override).
    pub max_segments: u32,
    /// An assignment is split for an idle connection only if both halves are this large.
    pub min_segment: u64,
    /// A file's first connection faster than this (bytes per second) stays the only one.
    pub single_stream_above: u64,
    /// Files of one job receiving bytes at the same time. A file that has all its bytes gives
    /// its place to the next while it is synced, verified and installed; as many again may be
    /// settling like that.
    pub files_in_flight: usize,
    /// Connections open to one host at once, across all jobs (`hosts` may override).
    pub max_connections_per_host: usize,
    /// Per-host overrides, keyed by host name (`huggingface.co`, `127.0.0.1`).
    pub hosts: std::collections::HashMap<String, HostSettings>,
    /// Hub endpoints (the config file's `[sources]` table). They live here so that every
    /// source resolver reaches them through `Engine::settings()`.
    pub sources: SourceSettings,
    /// Proxies and offline mode from the config file, globally and per hub (the environment
    /// and a job's own variables come first; see [`crate::settings::NetworkSettings`]).
    pub network: NetworkSettings,
}

/// The config file's proxy and offline keys: top-level `proxy`, `no_proxy`, `offline`, and the
/// same keys per hub in `[sources.huggingface]`, `[sources.modelscope]`, `[sources.civitai]`
/// (a hub's value wins over the global one). Proxy URLs may carry credentials: they are kept as
/// secrets and never printed.
///
/// The order a job's proxy is chosen in: the job's forwarded `https_proxy` / `HTTPS_PROXY` /
/// `http_proxy` / `HTTP_PROXY` / `all_proxy` / `ALL_PROXY` (and `no_proxy` / `NO_PROXY`), then
/// the same variables in the daemon's environment, then the hub's `proxy`, then the global one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The top-level keys.
    pub global: NetworkPolicy,
    /// `[sources.huggingface]`.
    pub huggingface: NetworkPolicy,
    /// `[sources.modelscope]`.
    pub modelscope: NetworkPolicy,
    /// `[sources.civitai]`.
    pub civitai: NetworkPolicy,
}

/// Proxy and offline settings at one level (global or one hub); `None` leaves it to the level
/// below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// The proxy for every request (`http://`, `https://`, `socks5://`, `socks5h://`); an empty
    /// string means a direct connection.
    pub proxy: Option<mdl_protocol::Secret>,
    /// Hosts reached directly, comma-separated as in `NO_PROXY` (`localhost,.corp,10.0.0.0/8`).
    pub no_proxy: Option<String>,
    /// Resolve from the local caches and completed downloads only; never open a connection.
    pub offline: Option<bool>,
}

/// Hub endpoints, in the order they are tried (mirrors first, then the official endpoint). An
/// environment override (`HF_ENDPOINT`, `MODELSCOPE_ENDPOINT`, ...) goes before all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSettings {
    /// Hugging Face endpoints (`[sources] hf_endpoints`).
    pub hf_endpoints: Vec<String>,
    /// ModelScope endpoints (`[sources] modelscope_endpoints`).
    pub modelscope_endpoints: Vec<String>,
    /// Civitai endpoints (`[sources] civitai_endpoints`).
    pub civitai_endpoints: Vec<String>,
}

/// The official Hugging Face endpoint.
pub const HF_OFFICIAL_ENDPOINT: &str = "https://huggingface.co";
/// The official ModelScope endpoint.
pub const MODELSCOPE_OFFICIAL_ENDPOINT: &str = "https://www.modelscope.cn";
/// The official Civitai endpoint.
pub const CIVITAI_OFFICIAL_ENDPOINT: &str = "https://civitai.com";

impl SourceSettings {
    /// The endpoint list of `hub` (`hf`, `ms` or `civitai`).
    pub fn of(&self, hub: &str) -> Option<&Vec<String>> {
        match hub {
            "hf" => Some(&self.hf_endpoints),
            "ms" => Some(&self.modelscope_endpoints),
            "civitai" => Some(&self.civitai_endpoints),
            _ => None,
        }
    }

    /// The config file's key of `hub`'s list (`hf_endpoints`, ...).
    pub fn key_of(hub: &str) -> Option<&'static str> {
        match hub {
            "hf" => Some("hf_endpoints"),
            "ms" => Some("modelscope_endpoints"),
            "civitai" => Some("civitai_endpoints"),
            _ => None,
        }
    }

    /// The official endpoint of `hub`.
    pub fn official(hub: &str) -> Option<&'static str> {
        match hub {
            "hf" => Some(HF_OFFICIAL_ENDPOINT),
            "ms" => Some(MODELSCOPE_OFFICIAL_ENDPOINT),
            "civitai" => Some(CIVITAI_OFFICIAL_ENDPOINT),
            _ => None,
        }
    }

    /// These endpoints with the lists in `overrides` (by hub) in place of their hub's.
    pub fn overlaid(
        &self,
        overrides: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> SourceSettings {
        let mut next = self.clone();
        for (hub, list) in overrides {
            let slot = match hub.as_str() {
                "hf" => &mut next.hf_endpoints,
                "ms" => &mut next.modelscope_endpoints,
                "civitai" => &mut next.civitai_endpoints,
                _ => continue,
            };
            *slot = list.clone();
        }
        next
    }
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            hf_endpoints: vec![HF_OFFICIAL_ENDPOINT.to_string()],
            modelscope_endpoints: vec![MODELSCOPE_OFFICIAL_ENDPOINT.to_string()],
            civitai_endpoints: vec![CIVITAI_OFFICIAL_ENDPOINT.to_string()],
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            stall_min: Duration::from_secs(5),
            dedupe_hard_links: false,
            response_timeout: Duration::from_secs(30),
            max_redirects: 10,
            max_attempts: 8,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(600),
            // Durable checkpoints only bound what a power cut or a reboot costs: a kill -9 in
            // the same boot keeps every written range (the sidecar, see engine::sidecar), so
            // the interval is 10 s now (was 2 s). The byte step stays at 128 MiB: measured, a
            // fast link is faster with it (each fdatasync starts writeback while the transfer
            // goes on) than with 1 GiB (one long final sync); README, "Durability".
            checkpoint_bytes: 128 * 1024 * 1024,
            checkpoint_interval: Duration::from_secs(10),
            user_agent: format!("mdl/{}", env!("CARGO_PKG_VERSION")),
            write_buffer_bytes: 1024 * 1024,
            segment_threshold: 64 * 1024 * 1024,
            segments: 8,
            max_segments: 32,
            min_segment: 4 * 1024 * 1024,
            single_stream_above: 128 * 1024 * 1024,
            files_in_flight: 8,
            max_connections_per_host: 32,
            hosts: Default::default(),
            sources: SourceSettings::default(),
            network: NetworkSettings::default(),
        }
    }
}

impl Settings {
    /// Defaults for the given socket and data directory.
    pub fn new(socket: PathBuf, data_dir: PathBuf) -> Self {
        Settings {
            socket,
            data_dir,
            download_dir: default_download_dir(),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            heartbeat_interval: Duration::from_secs(10),
            progress_interval: Duration::from_millis(250),
            shutdown_grace: Duration::from_secs(5),
            max_connections: 512,
            engine: EngineSettings::default(),
            ui: UiSettings::default(),
            config_file: None,
            watch_dir: None,
            repair: RepairMode::Manual,
            bandwidth_limit: None,
            poll_interval: Duration::from_secs(10),
            watch_settle: Duration::from_secs(1),
            force_poll: false,
            from_file: FileValues::default(),
        }
    }

    /// Read the config file again and return these settings with the keys that can change
    /// at runtime taken from it: `max_concurrent`, `bandwidth_limit`, the `[sources]`
    /// endpoints, `engine.max_connections_per_host`, `[engine.hosts]`, `watch_dir`, `repair`,
    /// `watch_poll_secs`, `watch_settle_ms`. A key the file no longer sets goes back to its
    /// default. Everything else keeps its value until the next start. An unreadable or invalid
    /// file is an error and changes nothing.
    pub fn reload(&self) -> Result<Settings, SettingsError> {
        let Some(path) = &self.config_file else {
            return Ok(self.clone());
        };
        let parsed = ConfigFile::read(path)?;
        let mut fresh = Settings::new(self.socket.clone(), self.data_dir.clone());
        parsed.apply(&mut fresh);
        Ok(self.with_runtime_keys_of(&fresh))
    }

    /// These settings with the runtime-changeable keys of `other` (see [`Settings::reload`]).
    pub fn with_runtime_keys_of(&self, other: &Settings) -> Settings {
        let mut next = self.clone();
        next.max_concurrent = other.max_concurrent;
        next.bandwidth_limit = other.bandwidth_limit;
        next.from_file = other.from_file.clone();
        next.watch_dir = other.watch_dir.clone();
        next.repair = other.repair;
        next.poll_interval = other.poll_interval;
        next.watch_settle = other.watch_settle;
        next.engine = self.engine.with_runtime_keys_of(&other.engine);
        next
    }

    /// Load settings: defaults, then the config file found by the lookup order, then the
    /// explicit socket and data directory (command line or environment) on top.
    pub fn load(
        socket: Option<PathBuf>,
        data_dir: Option<PathBuf>,
        config: Option<PathBuf>,
    ) -> Result<Settings, SettingsError> {
        let file = config
            .or_else(|| {
                std::env::var_os(CONFIG_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .or_else(|| Some(default_config_path()).filter(|p| p.exists()));
        let parsed = match &file {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        };
        let socket = mdl_protocol::endpoint::resolve_socket_path(
            socket.or(parsed.socket.clone()).as_deref(),
        );
        let data_dir = data_dir
            .or_else(|| {
                std::env::var_os(DATA_DIR_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .or(parsed.data_dir.clone())
            .unwrap_or_else(default_data_dir);
        let mut settings = Settings::new(socket, data_dir);
        parsed.apply(&mut settings);
        settings.config_file = file;
        Ok(settings)
    }

    /// The sled database directory.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

/// `$XDG_DATA_HOME/mdl`, else `~/.local/share/mdl`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("mdl");
    }
    home_dir().join(".local/share/mdl")
}

/// `$XDG_CONFIG_HOME/mdl/config.toml`, else `~/.config/mdl/config.toml`.
pub fn default_config_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("mdl/config.toml");
    }
    home_dir().join(".config/mdl/config.toml")
}

/// `$XDG_DOWNLOAD_DIR`, else `~/Downloads`.
pub fn default_download_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DOWNLOAD_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    home_dir().join("Downloads")
}

/// The user's home directory (`$HOME`, `%USERPROFILE%` on Windows).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The config file as written by a person. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    socket: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    download_dir: Option<PathBuf>,
    max_concurrent: Option<u32>,
    heartbeat_secs: Option<u64>,
    bandwidth_limit: Option<RateValue>,
    watch_dir: Option<PathBuf>,
    repair: Option<RepairMode>,
    watch_poll_secs: Option<u64>,
    watch_settle_ms: Option<u64>,
    watch_mode: Option<WatchMode>,
    #[serde(default)]
    engine: EngineFile,
    #[serde(default)]
    sources: SourcesFile,
    #[serde(default)]
    ui: UiFile,
    proxy: Option<mdl_protocol::Secret>,
    no_proxy: Option<String>,
    offline: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UiFile {
    enabled: Option<bool>,
    listen: Option<Vec<std::net::SocketAddr>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesFile {
    hf_endpoints: Option<Vec<String>>,
    modelscope_endpoints: Option<Vec<String>>,
    civitai_endpoints: Option<Vec<String>>,
    #[serde(default)]
    huggingface: NetworkPolicy,
    #[serde(default)]
    modelscope: NetworkPolicy,
    #[serde(default)]
    civitai: NetworkPolicy,
}

/// Per-host engine settings (`[engine.hosts."HOST"]` in the config file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// Connections a segmented file from this host starts with.
    pub segments: Option<u32>,
    /// The most connections a segmented file from this host grows to (without it, a host
    /// that sets `segments` stays at that count).
    pub max_segments: Option<u32>,
    /// Connections to this host at once, across all jobs.
    pub connections: Option<usize>,
}

/// `watch_mode` in the config file.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WatchMode {
    /// File-system events, polling on network file systems.
    Auto,
    /// Polling everywhere.
    Poll,
}

/// A rate in the config file: bytes per second as a number, or a string like `"20M"`,
/// `"1.5G"`, `"500Ki"` (k/M/G are powers of 1000, Ki/Mi/Gi of 1024), or `"off"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RateValue {
    Bytes(u64),
    Text(String),
}

impl RateValue {
    /// Bytes per second; `None` for no limit (`"off"`, 0).
    fn bytes_per_second(&self) -> Result<Option<u64>, String> {
        let text = match self {
            RateValue::Bytes(0) => return Ok(None),
            RateValue::Bytes(n) => return Ok(Some(*n)),
            RateValue::Text(t) => t.trim(),
        };
        if text.eq_ignore_ascii_case("off") || text == "0" {
            return Ok(None);
        }
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let factor: f64 = match unit.trim().trim_end_matches("/s").trim_end_matches('B') {
            "" => 1.0,
            "k" | "K" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!(
                    "bandwidth_limit: unknown unit {other:?} in {text:?}"
                ))
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("bandwidth_limit: {text:?} is not a rate like \"20M\""))?;
        Ok(Some((value * factor).round().max(1.0) as u64))
    }
}

impl EngineSettings {
    /// These settings with the runtime-changeable keys of `other`: the hub endpoints and the
    /// per-host connection limits.
    pub fn with_runtime_keys_of(&self, other: &EngineSettings) -> EngineSettings {
        let mut next = self.clone();
        next.sources = other.sources.clone();
        next.hosts = other.hosts.clone();
        next.max_connections_per_host = other.max_connections_per_host;
        next
    }

    /// Connections per segmented file for `host`.
    pub fn segments_for(&self, host: &str) -> u32 {
        self.host(host)
            .and_then(|h| h.segments)
            .unwrap_or(self.segments)
            .max(1)
    }

    /// The most connections a segmented file from `host` grows to (never fewer than it starts
    /// with): the host's `max_segments`, else its `segments` when it sets them (a count chosen
    /// for a host is kept), else the engine's `max_segments`.
    pub fn max_segments_for(&self, host: &str) -> u32 {
        let start = self.segments_for(host);
        let host = self.host(host);
        host.and_then(|h| h.max_segments.or(h.segments))
            .unwrap_or(self.max_segments)
            .max(start)
    }

    /// The overrides for `host` (`host:port` first, then the bare host name).
    fn host(&self, host: &str) -> Option<&HostSettings> {
        self.hosts
            .get(host)
            .or_else(|| self.hosts.get(host.split(':').next().unwrap_or(host)))
    }

    /// Connections to `host` at once.
    pub fn connections_for(&self, host: &str) -> usize {
        self.host(host)
            .and_then(|h| h.connections)
            .unwrap_or(self.max_connections_per_host)
            .max(1)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineFile {
    segment_threshold: Option<u64>,
    segments: Option<u32>,
    max_segments: Option<u32>,
    min_segment: Option<u64>,
    files_in_flight: Option<usize>,
    single_stream_above: Option<u64>,
    max_connections_per_host: Option<usize>,
    #[serde(default)]
    hosts: std::collections::HashMap<String, HostSettings>,
    connect_timeout_secs: Option<u64>,
    stall_timeout_secs: Option<u64>,
    stall_min_ms: Option<u64>,
    dedupe_hard_links: Option<bool>,
    response_timeout_secs: Option<u64>,
    max_redirects: Option<usize>,
    max_attempts: Option<u32>,
    backoff_base_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    retry_after_max_secs: Option<u64>,
    checkpoint_bytes: Option<u64>,
    checkpoint_interval_ms: Option<u64>,
    user_agent: Option<String>,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<ConfigFile, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // Check what serde cannot, so an invalid file is refused as a whole.
        if let Some(rate) = &file.bandwidth_limit {
            rate.bytes_per_second()
                .map_err(|message| SettingsError::Parse {
                    path: path.to_path_buf(),
                    message,
                })?;
        }
        if file.watch_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(SettingsError::Parse {
                path: path.to_path_buf(),
                message: "watch_dir must be an absolute path".into(),
            });
        }
        Ok(file)
    }

    fn apply(self, s: &mut Settings) {
        let endpoints = [
            ("hf", &self.sources.hf_endpoints),
            ("ms", &self.sources.modelscope_endpoints),
            ("civitai", &self.sources.civitai_endpoints),
        ]
        .into_iter()
        .filter_map(|(hub, list)| Some((hub.to_string(), list.clone()?)))
        .collect();
        s.from_file = FileValues {
            endpoints,
            max_concurrent: self.max_concurrent.map(|v| v.max(1)),
            bandwidth_limit: self
                .bandwidth_limit
                .as_ref()
                .map(|r| r.bytes_per_second().unwrap_or(None)),
        };
        if let Some(v) = s.from_file.bandwidth_limit {
            s.bandwidth_limit = v;
        }
        if let Some(v) = self.watch_dir {
            s.watch_dir = Some(v);
        }
        if let Some(v) = self.repair {
            s.repair = v;
        }
        if let Some(v) = self.watch_poll_secs {
            s.poll_interval = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.watch_mode {
            s.force_poll = matches!(v, WatchMode::Poll);
        }
        if let Some(v) = self.watch_settle_ms {
            s.watch_settle = Duration::from_millis(v.max(50));
        }
        if let Some(v) = self.download_dir {
            s.download_dir = v;
        }
        if let Some(v) = self.max_concurrent {
            s.max_concurrent = v.max(1);
        }
        if let Some(v) = self.heartbeat_secs {
            s.heartbeat_interval = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.ui.enabled {
            s.ui.enabled = v;
        }
        if let Some(v) = self.ui.listen.filter(|l| !l.is_empty()) {
            s.ui.listen = v;
        }
        if let Some(v) = self.sources.hf_endpoints {
            s.engine.sources.hf_endpoints = v;
        }
        if let Some(v) = self.sources.modelscope_endpoints {
            s.engine.sources.modelscope_endpoints = v;
        }
        if let Some(v) = self.sources.civitai_endpoints {
            s.engine.sources.civitai_endpoints = v;
        }
        s.engine.network = NetworkSettings {
            global: NetworkPolicy {
                proxy: self.proxy,
                no_proxy: self.no_proxy,
                offline: self.offline,
            },
            huggingface: self.sources.huggingface,
            modelscope: self.sources.modelscope,
            civitai: self.sources.civitai,
        };
        let e = self.engine;
        let engine = &mut s.engine;
        if let Some(v) = e.connect_timeout_secs {
            engine.connect_timeout = Duration::from_secs(v);
        }
        if let Some(v) = e.stall_timeout_secs {
            engine.stall_timeout = Duration::from_secs(v);
        }
        if let Some(v) = e.stall_min_ms {
            engine.stall_min = Duration::from_millis(v.max(10));
        }
        if let Some(v) = e.dedupe_hard_links {
            engine.dedupe_hard_links = v;
        }
        if let Some(v) = e.response_timeout_secs {
            engine.response_timeout = Duration::from_secs(v);
        }
        if let Some(v) = e.max_redirects {
            engine.max_redirects = v;
        }
        if let Some(v) = e.max_attempts {
            engine.max_attempts = v.max(1);
        }
        if let Some(v) = e.backoff_base_ms {
            engine.backoff_base = Duration::from_millis(v);
        }
        if let Some(v) = e.backoff_max_ms {
            engine.backoff_max = Duration::from_millis(v);
        }
        if let Some(v) = e.retry_after_max_secs {
            engine.retry_after_max = Duration::from_secs(v);
        }
        if let Some(v) = e.checkpoint_bytes {
            engine.checkpoint_bytes = v.max(64 * 1024);
        }
        if let Some(v) = e.checkpoint_interval_ms {
            engine.checkpoint_interval = Duration::from_millis(v.max(10));
        }
        if let Some(v) = e.user_agent {
            engine.user_agent = v;
        }
        if let Some(v) = e.segment_threshold {
            engine.segment_threshold = v;
        }
        if let Some(v) = e.segments {
            engine.segments = v.clamp(1, 64);
        }
        if let Some(v) = e.max_segments {
            engine.max_segments = v.clamp(1, 64);
        }
        if let Some(v) = e.min_segment {
            engine.min_segment = v.max(64 * 1024);
        }
        if let Some(v) = e.single_stream_above {
            engine.single_stream_above = v;
        }
        if let Some(v) = e.files_in_flight {
            engine.files_in_flight = v.clamp(1, 64);
        }
        if let Some(v) = e.max_connections_per_host {
            engine.max_connections_per_host = v.max(1);
        }
        engine.hosts.extend(e.hosts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "max_concurrent = 5\n[engine]\nstall_timeout_secs = 7\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(dir.path().join("s.sock")),
            Some(dir.path().into()),
            Some(path),
        )
        .unwrap();
        assert_eq!(s.max_concurrent, 5);
        assert_eq!(s.engine.stall_timeout, Duration::from_secs(7));
        assert_eq!(s.socket, dir.path().join("s.sock"));
    }

    #[test]
    fn a_segmented_file_grows_to_max_segments_unless_its_host_pins_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[engine]\nsegments = 4\nmax_segments = 20\n\
             [engine.hosts.\"pinned.example\"]\nsegments = 6\n\
             [engine.hosts.\"grows.example\"]\nsegments = 2\nmax_segments = 12\n\
             [engine.hosts.\"small.example\"]\nmax_segments = 1\n",
        )
        .unwrap();
        let s = Settings::load(None, Some(dir.path().into()), Some(path)).unwrap();
        let e = &s.engine;
        assert_eq!(
            (e.segments_for("other"), e.max_segments_for("other")),
            (4, 20)
        );
        assert_eq!(e.max_segments_for("pinned.example:443"), 6);
        assert_eq!(e.max_segments_for("grows.example"), 12);
        // Never below the count a file starts with.
        assert_eq!(e.max_segments_for("small.example"), 4);
        let defaults = EngineSettings::default();
        assert_eq!(defaults.max_segments_for("any"), 32);
    }

    #[test]
    fn the_readme_config_example_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\n")
            .expect("a toml block in the README")
            + 8;
        let end = start + readme[start..].find("```").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &readme[start..end]).unwrap();
        let s = Settings::load(None, Some(dir.path().into()), Some(path)).unwrap();
        assert_eq!(s.engine.segments_for("cdn-lfs.huggingface.co"), 16);
        assert_eq!(s.engine.connections_for("cdn-lfs.huggingface.co:443"), 32);
        assert_eq!(
            s.engine.sources.hf_endpoints[0],
            "https://hf-mirror.example"
        );
        assert_eq!(s.engine.files_in_flight, 8);
        assert!(!s.ui.enabled);
    }

    #[test]
    fn ui_section_turns_the_dashboard_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(!Settings::new("s".into(), "d".into()).ui.enabled);
        std::fs::write(
            &path,
            "[ui]\nenabled = true\nlisten = [\"127.0.0.1:9999\"]\n",
        )
        .unwrap();
        let s = Settings::load(None, Some(dir.path().into()), Some(path)).unwrap();
        assert!(s.ui.enabled);
        assert_eq!(s.ui.listen, vec!["127.0.0.1:9999".parse().unwrap()]);
    }

    #[test]
    fn proxy_and_offline_keys_globally_and_per_hub() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "proxy = \"http://u:pw@proxy.corp:3128\"\nno_proxy = \"localhost\"\noffline = false\n\
             [sources]\nhf_endpoints = [\"http://olah:8090\"]\n\
             [sources.huggingface]\nproxy = \"socks5h://127.0.0.1:1080\"\noffline = true\n",
        )
        .unwrap();
        let s = Settings::load(None, Some(dir.path().into()), Some(path)).unwrap();
        let n = &s.engine.network;
        assert_eq!(
            n.global.proxy.as_ref().unwrap().expose(),
            "http://u:pw@proxy.corp:3128"
        );
        assert_eq!(n.global.no_proxy.as_deref(), Some("localhost"));
        assert_eq!(n.huggingface.offline, Some(true));
        assert_eq!(n.modelscope, NetworkPolicy::default());
        // The settings' Debug (what a log line would show) hides proxy credentials.
        assert!(!format!("{s:?}").contains("pw@"));
    }

    #[test]
    fn reload_takes_runtime_keys_and_refuses_invalid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "max_concurrent = 5\nbandwidth_limit = \"1.5M\"\nrepair = \"auto\"\n[engine]\nstall_timeout_secs = 7\n").unwrap();
        let s = Settings::load(None, Some(dir.path().into()), Some(path.clone())).unwrap();
        assert_eq!(s.config_file.as_deref(), Some(path.as_path()));
        assert_eq!(s.bandwidth_limit, Some(1_500_000));
        assert_eq!(s.from_file.max_concurrent, Some(5));
        assert_eq!(s.repair, RepairMode::Auto);
        std::fs::write(&path, "max_concurrent = 2\nwatch_dir = \"/drop\"\n[engine]\nstall_timeout_secs = 9\nmax_connections_per_host = 4\n").unwrap();
        let next = s.reload().unwrap();
        assert_eq!(next.max_concurrent, 2);
        assert_eq!(
            next.bandwidth_limit, None,
            "a key removed from the file is back to its default"
        );
        assert_eq!(next.repair, RepairMode::Manual);
        assert_eq!(next.watch_dir.as_deref(), Some(Path::new("/drop")));
        assert_eq!(next.engine.max_connections_per_host, 4);
        assert_eq!(
            next.engine.stall_timeout,
            Duration::from_secs(7),
            "only runtime keys reload"
        );
        std::fs::write(&path, "max_concurrent = \"many\"\n").unwrap();
        assert!(next.reload().unwrap_err().to_string().contains("line 1"));
        std::fs::write(&path, "bandwidth_limit = \"5 parsecs\"\n").unwrap();
        assert!(next
            .reload()
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        std::fs::write(&path, "watch_dir = \"rel\"\n").unwrap();
        assert!(next.reload().unwrap_err().to_string().contains("absolute"));
    }

    #[test]
    fn unknown_keys_are_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "max_concurent = 5\n").unwrap();
        let err = Settings::load(None, Some(dir.path().into()), Some(path.clone())).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("max_concurent"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
}
