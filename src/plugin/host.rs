//! The sandbox: one engine, compiled components cached by hash, a fresh store per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{approval, connector, policy, provisioner, types};
use super::caps::{AwsCapability, AzureCapability, CallInfo, HttpCapability};
use super::manifest::{self, Manifest};
use super::{
    ConnectorError, ConnectorFailure, CredentialSet, Credentials, CredentialsRequest, Decision,
    Evaluation, EvaluationContext, GrantRequest, Granted, LoadError, PluginError, PluginIdentity,
    Requirement, RevokeRequest, ValidateFailure, World,
};
use crate::secret::SecretStore;

/// What the host lends plugins: secrets for `http` headers, and the cloud clients behind the
/// `aws` capability.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// Named secrets.
    pub secrets: SecretStore,
    /// Sallyport's AWS clients, when `[aws]` is configured.
    pub aws: Option<Arc<crate::cloud::aws::AwsCloud>>,
    /// Sallyport's Azure clients, when `[azure]` is configured.
    pub azure: Option<Arc<crate::cloud::azure::AzureCloud>>,
}

/// Sizing of the sandbox.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Sandbox slots: at most this many plugin calls run at once (the pool is sized to match).
    pub slots: u32,
    /// How long a call may wait for a free slot before failing with [`PluginError::Busy`].
    pub queue_wait: Duration,
    /// Epoch tick: the granularity of deadlines and of cooperative yields.
    pub tick: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            slots: 64,
            queue_wait: Duration::from_secs(2),
            tick: Duration::from_millis(1),
        }
    }
}

/// Loads plugins and runs their calls. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    config: HostConfig,
    permits: Arc<Semaphore>,
    /// Compiled components by SHA-256 of their bytes.
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    http_client: reqwest::Client,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for HostInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Bytes of guest stderr kept per call (panic messages land there).
const STDERR_CAPACITY: usize = 8 * 1024;
/// Extra wall-clock time granted beyond a call's deadline before the host abandons it.
const ABANDON_GRACE: Duration = Duration::from_millis(250);

impl PluginHost {
    /// Build the engine and its pool, and start the epoch ticker.
    pub fn new(config: HostConfig) -> Result<Self, PluginError> {
        let internal = |message: String| PluginError::Internal {
            plugin: "<host>".into(),
            message,
        };
        let slots = config.slots.max(1);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 16)
            .max_core_instances_per_component(16)
            .total_memories(slots * 2)
            .max_memories_per_component(2)
            .total_tables(slots * 8)
            .max_tables_per_component(8)
            .total_stacks(slots)
            .max_memory_size(manifest::MAX_MEMORY_BYTES as usize)
            // Keep the first pages of each slot resident and reset them in place: a fresh
            // instance per call then costs microseconds, not page faults.
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto);
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| internal(format!("engine: {e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = config.tick.max(Duration::from_micros(100));
            std::thread::Builder::new()
                .name("sallyport-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| internal(format!("epoch thread: {e}")))?;
        }

        let http_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("sallyport/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| internal(format!("http client: {e}")))?;

        Ok(PluginHost {
            inner: Arc::new(HostInner {
                engine,
                permits: Arc::new(Semaphore::new(slots as usize)),
                config: HostConfig { slots, ..config },
                compiled: Mutex::new(HashMap::new()),
                http_client,
                ticker_stop,
            }),
        })
    }

    /// Compile (or fetch from the cache) a component.
    fn compile(&self, name: &str, bytes: &[u8]) -> Result<(Component, [u8; 32]), LoadError> {
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(c) = self
            .inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
        {
            return Ok((c.clone(), hash));
        }
        check_header(name, bytes)?;
        let component =
            Component::new(&self.inner.engine, bytes).map_err(|e| LoadError::InvalidComponent {
                plugin: name.to_owned(),
                reason: format!("{e:#}"),
            })?;
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, component.clone());
        Ok((component, hash))
    }

    /// Inspect a component without a manifest: its world, API version and imported capabilities.
    pub fn inspect(&self, name: &str, bytes: &[u8]) -> Result<Inspection, LoadError> {
        let (component, hash) = self.compile(name, bytes)?;
        inspect(&self.inner.engine, name, &component, hash)
    }

    /// Load a plugin with no cloud capabilities behind it (see [`PluginHost::load_with`]).
    pub fn load(
        &self,
        manifest: Manifest,
        bytes: &[u8],
        secrets: &SecretStore,
    ) -> Result<Plugin, LoadError> {
        self.load_with(
            manifest,
            bytes,
            &Services {
                secrets: secrets.clone(),
                aws: None,
                azure: None,
            },
        )
    }

    /// Load a plugin: compile, check imports against the manifest's grants, build its
    /// `InstancePre`. `services.secrets` are the values the `http` capability may inject (only
    /// names the manifest lists are reachable); `services.aws` and `services.azure` back the `aws`
    /// and `azure` capabilities (when absent, their calls answer `capability-not-available`).
    pub fn load_with(
        &self,
        manifest: Manifest,
        bytes: &[u8],
        services: &Services,
    ) -> Result<Plugin, LoadError> {
        let secrets = &services.secrets;
        let name = manifest.name.clone();
        let (component, hash) = self.compile(&name, bytes)?;
        let inspection = inspect(&self.inner.engine, &name, &component, hash)?;
        if inspection.world != manifest.world {
            return Err(LoadError::WorldMismatch {
                plugin: name,
                manifest: manifest.world,
                component: inspection.world,
            });
        }
        if let Some(stated) = &manifest.api_version
            && *stated != inspection.api_version
        {
            return Err(LoadError::Manifest(format!(
                "plugin `{name}`: the manifest says api-version {stated}, but the component was built against sallyport:plugin@{}; fix the manifest or rebuild",
                inspection.api_version
            )));
        }
        for imp in &inspection.imports {
            match classify_import(imp) {
                ImportClass::Base => {}
                ImportClass::Capability(cap) => {
                    let granted = match cap {
                        "http" => manifest.capabilities.http.is_some(),
                        "aws" => manifest.capabilities.aws.is_some(),
                        "azure" => manifest.capabilities.azure.is_some(),
                        _ => false,
                    };
                    if !granted {
                        return Err(LoadError::NotGranted {
                            plugin: name,
                            import: imp.clone(),
                            capability: cap,
                        });
                    }
                }
                ImportClass::Forbidden(why) => {
                    return Err(LoadError::Forbidden {
                        plugin: name,
                        import: imp.clone(),
                        why,
                    });
                }
                ImportClass::FutureApi => {
                    return Err(LoadError::UnsupportedApi {
                        plugin: name,
                        found: imp.clone(),
                        supported: manifest::API_VERSION,
                    });
                }
            }
        }

        let linker = build_linker(&self.inner.engine, &manifest).map_err(|e| LoadError::Link {
            plugin: name.clone(),
            reason: format!("{e:#}"),
        })?;
        let link_err = |e: wasmtime::Error| LoadError::Link {
            plugin: name.clone(),
            reason: format!("{e:#}"),
        };
        let pre = linker.instantiate_pre(&component).map_err(link_err)?;
        let pre = match manifest.world {
            World::Approval => {
                WorldPre::Approval(approval::ApprovalPre::new(pre).map_err(link_err)?)
            }
            World::Connector => {
                WorldPre::Connector(connector::ConnectorPre::new(pre).map_err(link_err)?)
            }
        };

        let http = manifest.capabilities.http.as_ref().map(|grant| {
            let mut granted = SecretStore::new();
            for s in &grant.secrets {
                if let Some(v) = secrets.get(s) {
                    granted.insert(s.clone(), v.clone());
                }
            }
            Arc::new(HttpCapability::new(
                grant.allow.clone(),
                granted,
                self.inner.http_client.clone(),
            ))
        });

        let aws = match (&manifest.capabilities.aws, &services.aws) {
            (Some(grant), Some(cloud)) => Some(Arc::new(AwsCapability {
                cloud: cloud.clone(),
                arns: grant.arns.clone(),
            })),
            _ => None,
        };
        let azure = match (&manifest.capabilities.azure, &services.azure) {
            (Some(grant), Some(cloud)) => Some(Arc::new(AzureCapability {
                cloud: cloud.clone(),
                scopes: grant.scopes.clone(),
            })),
            _ => None,
        };

        let identity = PluginIdentity {
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            sha256: hex::encode(hash),
        };
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                identity,
                manifest,
                inspection,
                pre,
                http,
                aws,
                azure,
                host: self.inner.clone(),
            }),
        })
    }

    /// How many distinct components are compiled and cached.
    pub fn cached_components(&self) -> usize {
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The host's sizing.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }
}

/// Refuse what is not a component before the compiler gives a less readable answer.
fn check_header(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    let invalid = |reason: &str| LoadError::InvalidComponent {
        plugin: name.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(invalid(
            "this is not a WebAssembly file (no `\\0asm` header)",
        ));
    }
    match &bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(invalid(
            "this is a core WebAssembly module, not a component; build the plugin with `cargo build --target wasm32-wasip2`, which produces components",
        )),
        _ => Err(invalid("unsupported WebAssembly binary version")),
    }
}

/// What a component is, read from its imports and exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The world it implements.
    pub world: World,
    /// The contract version it was built against (from its export).
    pub api_version: semver::Version,
    /// The world's export, e.g. `sallyport:plugin/policy@0.1.0`.
    pub export: String,
    /// Host capabilities it imports (`http`, `aws`, `azure`; `log` is always available).
    pub capabilities: Vec<&'static str>,
    /// Every import, by name.
    pub imports: Vec<String>,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

fn inspect(
    engine: &Engine,
    name: &str,
    component: &Component,
    hash: [u8; 32],
) -> Result<Inspection, LoadError> {
    let ty = component.component_type();
    let mut world = None;
    for (export, _) in ty.exports(engine) {
        let Some((iface, version)) = split_sallyport(export) else {
            continue;
        };
        let w = match iface {
            "policy" => World::Approval,
            "provisioner" => World::Connector,
            _ => continue,
        };
        let v = version.and_then(|v| semver::Version::parse(v).ok());
        match v {
            Some(v) if manifest::api_compatible(&v) => world = Some((w, v, export.to_owned())),
            _ => {
                return Err(LoadError::UnsupportedApi {
                    plugin: name.to_owned(),
                    found: export.to_owned(),
                    supported: manifest::API_VERSION,
                });
            }
        }
    }
    let Some((world, api_version, export)) = world else {
        return Err(LoadError::NoWorld {
            plugin: name.to_owned(),
        });
    };
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
    let mut capabilities = Vec::new();
    for i in &imports {
        if let ImportClass::Capability(c) = classify_import(i)
            && !capabilities.contains(&c)
        {
            capabilities.push(c);
        }
    }
    Ok(Inspection {
        world,
        api_version,
        export,
        capabilities,
        imports,
        sha256: hex::encode(hash),
    })
}

/// `sallyport:plugin/<iface>@<version>` → (iface, version).
fn split_sallyport(name: &str) -> Option<(&str, Option<&str>)> {
    let rest = name.strip_prefix("sallyport:plugin/")?;
    Some(match rest.split_once('@') {
        Some((i, v)) => (i, Some(v)),
        None => (rest, None),
    })
}

enum ImportClass {
    /// Always linked: `types`, `log`, and the harmless WASI plumbing Rust's std needs.
    Base,
    /// Linked only when the manifest grants it.
    Capability(&'static str),
    /// Never linked.
    Forbidden(&'static str),
    /// A `sallyport:plugin` interface of an unsupported version or unknown to this host.
    FutureApi,
}

fn classify_import(name: &str) -> ImportClass {
    if let Some((iface, version)) = split_sallyport(name) {
        let compatible = version
            .and_then(|v| semver::Version::parse(v).ok())
            .is_some_and(|v| manifest::api_compatible(&v));
        if !compatible {
            return ImportClass::FutureApi;
        }
        return match iface {
            "types" | "log" => ImportClass::Base,
            "http" => ImportClass::Capability("http"),
            "aws" => ImportClass::Capability("aws"),
            "azure" => ImportClass::Capability("azure"),
            _ => ImportClass::FutureApi,
        };
    }
    let (iface, _) = name.split_once('@').unwrap_or((name, ""));
    match iface {
        "wasi:io/error" | "wasi:io/poll" | "wasi:io/streams" => ImportClass::Base,
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            ImportClass::Base
        }
        "wasi:cli/exit"
        | "wasi:cli/environment"
        | "wasi:cli/stdin"
        | "wasi:cli/stdout"
        | "wasi:cli/stderr"
        | "wasi:cli/terminal-input"
        | "wasi:cli/terminal-output"
        | "wasi:cli/terminal-stdin"
        | "wasi:cli/terminal-stdout"
        | "wasi:cli/terminal-stderr" => ImportClass::Base,
        i if i.starts_with("wasi:filesystem/") => ImportClass::Forbidden(
            "plugins have no filesystem; settings arrive as JSON in each call",
        ),
        i if i.starts_with("wasi:sockets/") => ImportClass::Forbidden(
            "plugins have no sockets; use the allow-listed sallyport:plugin/http capability",
        ),
        i if i.starts_with("wasi:http/") => ImportClass::Forbidden(
            "plugins use the allow-listed sallyport:plugin/http capability, not wasi:http",
        ),
        i if i.starts_with("wasi:clocks/") => ImportClass::Forbidden(
            "plugins read no clock; use the `now` the host passes in every call",
        ),
        _ => ImportClass::Forbidden("it is not part of the sallyport:plugin contract"),
    }
}

/// The linker for one plugin: WASI plumbing with nothing behind it, `log`, and only the
/// capabilities the manifest grants.
fn build_linker(engine: &Engine, manifest: &Manifest) -> wasmtime::Result<Linker<HostState>> {
    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::p2::bindings::{cli, random};
    use wasmtime_wasi::random::WasiRandom;

    let mut l = Linker::<HostState>::new(engine);
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<HostState, HasIo>(&mut l, |t| {
        &mut t.table
    })?;
    {
        use wasmtime_wasi_io::bindings::wasi::io;
        io::poll::add_to_linker::<HostState, HasIo>(&mut l, |t| &mut t.table)?;
        io::streams::add_to_linker::<HostState, HasIo>(&mut l, |t| &mut t.table)?;
    }
    random::random::add_to_linker::<HostState, WasiRandom>(&mut l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(&mut l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(&mut l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;

    use super::bindings::connector::sallyport::plugin as ifaces;
    ifaces::types::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |t| t)?;
    ifaces::log::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |t| t)?;
    if manifest.capabilities.http.is_some() {
        ifaces::http::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |t| t)?;
    }
    if manifest.capabilities.aws.is_some() {
        ifaces::aws::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |t| t)?;
    }
    if manifest.capabilities.azure.is_some() {
        ifaces::azure::add_to_linker::<HostState, HasSelf<HostState>>(&mut l, |t| t)?;
    }
    Ok(l)
}

struct HasIo;
impl wasmtime::component::HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Per-call store data.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    timed_out: bool,
    pub(crate) call: CallInfo,
}

impl HostState {
    fn cli(&mut self) -> wasmtime_wasi::cli::WasiCliCtxView<'_> {
        wasmtime_wasi::cli::WasiCliView::cli(self)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers that it did, so the resulting trap is reported as such.
struct MemoryCap {
    limit: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

enum WorldPre {
    Approval(approval::ApprovalPre<HostState>),
    Connector(connector::ConnectorPre<HostState>),
}

/// A loaded plugin. Cheap to clone; every call runs in a fresh sandbox.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    identity: PluginIdentity,
    manifest: Manifest,
    inspection: Inspection,
    pre: WorldPre,
    http: Option<Arc<HttpCapability>>,
    aws: Option<Arc<AwsCapability>>,
    azure: Option<Arc<AzureCapability>>,
    host: Arc<HostInner>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("identity", &self.inner.identity)
            .field("world", &self.inner.manifest.world)
            .finish_non_exhaustive()
    }
}

/// Longest reason or summary a plugin may return.
const MAX_TEXT: usize = 4096;
/// Largest handle a connector may return.
const MAX_HANDLE: usize = 64 * 1024;
/// Most requirements, and most names in a requirement.
const MAX_LIST: usize = 1000;

/// One call's sandbox: a fresh store, its captured stderr, and the slot it holds.
struct Sandbox {
    store: Store<HostState>,
    stderr: MemoryOutputPipe,
    limits: manifest::Limits,
    slots: u32,
    plugin: String,
    _permit: OwnedSemaphorePermit,
}

impl Sandbox {
    /// Turn the outcome of a call (or its abandonment at the deadline) into a typed result.
    fn finish<R>(
        &self,
        outcome: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
    ) -> Result<R, PluginError> {
        let data = self.store.data();
        match outcome {
            Ok(Ok(r)) => Ok(r),
            Err(_) => Err(PluginError::Timeout {
                plugin: self.plugin.clone(),
                limit: self.limits.timeout,
            }),
            Ok(Err(e)) => Err(classify_error(
                &self.plugin,
                &e,
                data.timed_out,
                data.limiter.hit,
                self.limits,
                self.slots,
                &self.stderr,
            )),
        }
    }
}

/// Instantiate the plugin's world in a fresh sandbox and call one export, within its limits.
///
/// A macro rather than a closure-taking function so that the resulting futures stay `Send`.
macro_rules! sandboxed {
    ($plugin:expr, $info:expr, $world:ident, |$inst:ident, $store:ident| $call:expr) => {{
        let mut sb = $plugin.sandbox($info).await?;
        let WorldPre::$world(pre) = &$plugin.inner.pre else {
            return Err($plugin.wrong_world(World::$world).into());
        };
        let timeout = sb.limits.timeout + ABANDON_GRACE;
        let outcome = tokio::time::timeout(timeout, async {
            let $store = &mut sb.store;
            let $inst = pre.instantiate_async(&mut *$store).await?;
            $call.await
        })
        .await;
        sb.finish(outcome)?
    }};
}

impl Plugin {
    /// Name, version and hash.
    pub fn identity(&self) -> &PluginIdentity {
        &self.inner.identity
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// Its world.
    pub fn world(&self) -> World {
        self.inner.manifest.world
    }

    /// What its component imports and exports.
    pub fn inspection(&self) -> &Inspection {
        &self.inner.inspection
    }

    fn name(&self) -> &str {
        &self.inner.identity.name
    }

    /// A fresh store within the plugin's limits, once a sandbox slot is free.
    async fn sandbox(&self, call: CallInfo) -> Result<Sandbox, PluginError> {
        let name = self.name().to_owned();
        let host = &self.inner.host;
        let permit: OwnedSemaphorePermit = match tokio::time::timeout(
            host.config.queue_wait,
            host.permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                return Err(PluginError::Busy {
                    plugin: name,
                    slots: host.config.slots,
                });
            }
        };
        let limits = self.inner.manifest.limits;
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_blocking_current_thread(false)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let deadline = Instant::now() + limits.timeout;
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                limit: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                hit: false,
            },
            timed_out: false,
            call: CallInfo {
                plugin: name.clone(),
                deadline,
                http: self.inner.http.clone(),
                aws: self.inner.aws.clone(),
                azure: self.inner.azure.clone(),
                log_lines: 0,
                ..call
            },
        };
        let mut store = Store::new(&host.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        // Yield to the executor at every tick so a busy plugin never starves other tasks.
        store.epoch_deadline_callback(move |mut ctx| {
            if Instant::now() >= deadline {
                ctx.data_mut().timed_out = true;
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(Sandbox {
            store,
            stderr,
            limits,
            slots: host.config.slots,
            plugin: name,
            _permit: permit,
        })
    }

    fn wrong_world(&self, expected: World) -> PluginError {
        PluginError::WrongWorld {
            plugin: self.name().to_owned(),
            expected,
            actual: self.world(),
        }
    }

    /// Ask an approval plugin to decide.
    pub async fn evaluate(&self, ctx: &EvaluationContext) -> Result<Evaluation, PluginError> {
        let raw = sandboxed!(self, CallInfo::default(), Approval, |inst, store| inst
            .sallyport_plugin_policy()
            .call_evaluate(store, ctx));
        let raw = raw.map_err(|message| PluginError::Reported {
            plugin: self.name().to_owned(),
            message: truncate(message, MAX_TEXT),
        })?;
        let decision = check_decision(raw).map_err(|reason| PluginError::Malformed {
            plugin: self.name().to_owned(),
            reason,
        })?;
        Ok(Evaluation {
            decision,
            plugin: self.inner.identity.clone(),
        })
    }

    /// Ask a plugin (either world) to check settings.
    pub async fn validate(&self, settings: &str) -> Result<(), ValidateFailure> {
        let res = match self.world() {
            World::Approval => sandboxed!(self, CallInfo::default(), Approval, |inst, store| inst
                .sallyport_plugin_policy()
                .call_validate(store, settings)),
            World::Connector => {
                sandboxed!(self, CallInfo::default(), Connector, |inst, store| inst
                    .sallyport_plugin_provisioner()
                    .call_validate(store, settings))
            }
        };
        match res {
            Ok(()) => Ok(()),
            Err(errors) if errors.is_empty() => {
                Err(ValidateFailure::Plugin(PluginError::Malformed {
                    plugin: self.name().to_owned(),
                    reason: "validate rejected the settings without saying why".into(),
                }))
            }
            Err(mut errors) => {
                errors.truncate(100);
                for e in &mut errors {
                    e.path = truncate(std::mem::take(&mut e.path), 256);
                    e.message = truncate(std::mem::take(&mut e.message), 1024);
                }
                Err(ValidateFailure::Invalid(errors))
            }
        }
    }

    fn connector_call_info(&self, request: &types::AccessRequest, expires_at: i64) -> CallInfo {
        CallInfo {
            request_id: Some(request.id.clone()),
            requester: Some(request.requester.id.clone()),
            entitlement: Some(request.entitlement.clone()),
            grant_expires_at: Some(expires_at),
            ..CallInfo::default()
        }
    }

    fn connector_error(&self, e: provisioner::ConnectorError) -> ConnectorFailure {
        use provisioner::ConnectorError as E;
        let t = |s: String| truncate(s, MAX_TEXT);
        ConnectorFailure::Connector {
            plugin: self.name().to_owned(),
            error: match e {
                E::Unsupported(s) => ConnectorError::Unsupported(t(s)),
                E::InvalidSettings(s) => ConnectorError::InvalidSettings(t(s)),
                E::Denied(s) => ConnectorError::Denied(t(s)),
                E::Transient(s) => ConnectorError::Transient(t(s)),
                E::Failed(s) => ConnectorError::Failed(t(s)),
            },
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> ConnectorFailure {
        ConnectorFailure::Plugin(PluginError::Malformed {
            plugin: self.name().to_owned(),
            reason: reason.into(),
        })
    }

    /// Ask a connector to put access in place.
    pub async fn grant(&self, req: &GrantRequest) -> Result<Granted, ConnectorFailure> {
        let info = self.connector_call_info(&req.request, req.expires_at);
        let res = sandboxed!(self, info, Connector, |inst, store| inst
            .sallyport_plugin_provisioner()
            .call_grant(store, req));
        let g = res.map_err(|e| self.connector_error(e))?;
        if g.handle.len() > MAX_HANDLE {
            return Err(self.malformed(format!(
                "grant handle is {} bytes; the limit is {MAX_HANDLE}",
                g.handle.len()
            )));
        }
        let handle: serde_json::Value = serde_json::from_str(&g.handle)
            .map_err(|e| self.malformed(format!("grant handle is not JSON: {e}")))?;
        if g.summary.len() > MAX_TEXT {
            return Err(self.malformed("grant summary is longer than 4 KiB"));
        }
        Ok(Granted {
            handle,
            summary: g.summary,
            plugin: self.inner.identity.clone(),
        })
    }

    /// Ask a connector to take access away. Idempotent by contract.
    pub async fn revoke(&self, req: &RevokeRequest) -> Result<(), ConnectorFailure> {
        let info = CallInfo {
            // Revoking serves no grant: there is no end for credentials to respect.
            grant_expires_at: None,
            ..self.connector_call_info(&req.request, req.now)
        };
        let res = sandboxed!(self, info, Connector, |inst, store| inst
            .sallyport_plugin_provisioner()
            .call_revoke(store, req));
        res.map_err(|e| self.connector_error(e))
    }

    /// Ask a connector for credentials of an active grant.
    pub async fn credentials(
        &self,
        req: &CredentialsRequest,
    ) -> Result<Credentials, ConnectorFailure> {
        let info = self.connector_call_info(&req.request, req.expires_at);
        let res = sandboxed!(self, info, Connector, |inst, store| inst
            .sallyport_plugin_provisioner()
            .call_credentials(store, req));
        let creds = res.map_err(|e| self.connector_error(e))?;
        let expiration = match &creds {
            CredentialSet::Aws(c) => {
                if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
                    return Err(self.malformed("AWS credentials without keys"));
                }
                c.expiration
            }
            CredentialSet::Generic(g) => g.expiration,
        };
        if expiration > req.expires_at {
            return Err(self.malformed(format!(
                "credentials expire at {expiration} ms, after the grant's end at {} ms",
                req.expires_at
            )));
        }
        Ok(Credentials(creds))
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Enforce the contract on an approval answer.
fn check_decision(raw: policy::Decision) -> Result<Decision, String> {
    match raw {
        policy::Decision::Approve(a) => {
            if a.reason.len() > MAX_TEXT {
                return Err(format!(
                    "approval reason is {} bytes; the limit is {MAX_TEXT}",
                    a.reason.len()
                ));
            }
            Ok(Decision::Approve {
                reason: a.reason,
                break_glass: a.break_glass,
            })
        }
        policy::Decision::Deny(reason) => {
            if reason.len() > MAX_TEXT {
                return Err(format!(
                    "denial reason is {} bytes; the limit is {MAX_TEXT}",
                    reason.len()
                ));
            }
            if reason.trim().is_empty() {
                return Err("a denial must give a reason".into());
            }
            Ok(Decision::Deny { reason })
        }
        policy::Decision::Pending(reqs) => {
            if reqs.is_empty() {
                return Err("pending with no requirements: nobody could ever approve".into());
            }
            if reqs.len() > MAX_LIST {
                return Err(format!(
                    "{} requirements; the limit is {MAX_LIST}",
                    reqs.len()
                ));
            }
            let mut out = Vec::with_capacity(reqs.len());
            for (i, r) in reqs.into_iter().enumerate() {
                if r.needed == 0 {
                    return Err(format!("requirement {i} (`{}`) needs 0 approvals", r.name));
                }
                if r.users.is_empty() && r.groups.is_empty() {
                    return Err(format!(
                        "requirement {i} (`{}`) names no users and no groups: nobody could satisfy it",
                        r.name
                    ));
                }
                if r.users.len() + r.groups.len() + r.approved_by.len() > MAX_LIST
                    || r.name.len() > 256
                {
                    return Err(format!("requirement {i} is too large"));
                }
                let distinct_users = r
                    .users
                    .iter()
                    .collect::<std::collections::HashSet<_>>()
                    .len();
                if r.groups.is_empty() && (r.needed as usize) > distinct_users {
                    return Err(format!(
                        "requirement {i} (`{}`) needs {} approvals from only {distinct_users} distinct users",
                        r.name, r.needed,
                    ));
                }
                out.push(Requirement {
                    name: r.name,
                    users: r.users,
                    groups: r.groups,
                    needed: r.needed,
                    approved_by: r.approved_by,
                });
            }
            Ok(Decision::Pending { requirements: out })
        }
    }
}

/// Turn whatever wasmtime reported into a typed error.
fn classify_error(
    plugin: &str,
    e: &wasmtime::Error,
    timed_out: bool,
    memory_hit: bool,
    limits: manifest::Limits,
    slots: u32,
    stderr: &MemoryOutputPipe,
) -> PluginError {
    let plugin = plugin.to_owned();
    if timed_out || matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return PluginError::Timeout {
            plugin,
            limit: limits.timeout,
        };
    }
    if memory_hit {
        return PluginError::OutOfMemory {
            plugin,
            limit_bytes: limits.memory_bytes,
        };
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return PluginError::Trap {
            plugin,
            message: format!("the plugin called exit({})", exit.0),
        };
    }
    let err_text = String::from_utf8_lossy(&stderr.contents())
        .trim()
        .to_owned();
    if let Some(trap) = e.downcast_ref::<Trap>() {
        let message = if err_text.is_empty() {
            format!("{trap}")
        } else {
            // A Rust guest prints its panic message to stderr before aborting.
            format!("{} ({trap})", truncate(err_text, 1024))
        };
        return PluginError::Trap { plugin, message };
    }
    let msg = format!("{e:#}");
    if msg.contains("concurrent") && msg.contains("limit") {
        return PluginError::Busy { plugin, slots };
    }
    PluginError::Internal {
        plugin,
        message: truncate(msg, 2048),
    }
}
