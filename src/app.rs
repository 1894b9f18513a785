//! Assembling and running a server: store, plugin host, policy, HTTP, job worker; graceful
//! shutdown on SIGINT/SIGTERM and policy reload on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ParseOptions};
use crate::http::{AppState, DemoTarget};
use crate::jobs::{self, WorkerConfig};
use crate::metrics::Metrics;
use crate::plugin::{HostConfig, PluginHost};
use crate::policy::Policy;
use crate::secret::Secret;
use crate::service::Service;
use crate::store::{SqlStore, Store};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Mount the dev login and the demo target.
    pub dev: bool,
    /// The demo target's token (dev mode).
    pub demo_token: Option<Secret>,
    /// Where the configuration came from (reloaded on SIGHUP).
    pub config_path: Option<PathBuf>,
    /// Run the job worker (tests may run a server without one).
    pub no_worker: bool,
    /// How long shutdown waits for running jobs.
    pub shutdown_grace: Option<Duration>,
}

/// A running server.
#[derive(Debug)]
pub struct App {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The core.
    pub service: Service,
    /// The dev-mode demo target.
    pub demo: Option<Arc<DemoTarget>>,
    store: SqlStore,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    worker: Option<JoinHandle<()>>,
    notify_task: Option<JoinHandle<()>>,
    options: Options,
}

impl App {
    /// Connect, migrate, load plugins, bind, and start serving and working.
    pub async fn start(config: Config, options: Options) -> anyhow::Result<App> {
        let store = SqlStore::connect(
            config.database.url.expose(),
            config.database.max_connections,
        )
        .await
        .context("opening the database")?;
        let host = PluginHost::new(HostConfig {
            slots: config.plugin_slots,
            ..HostConfig::default()
        })
        .context("starting the plugin host")?;
        let listen = config.server.listen;
        let max_body = config.server.max_body_bytes;
        let request_timeout = config.server.request_timeout;
        let jobs_cfg = config.jobs.clone();
        let policy = Policy::build(config, &host)
            .await
            .map_err(|p| anyhow::anyhow!("the configuration is invalid:\n{p}"))?;
        let metrics = Arc::new(Metrics::default());
        let service = Service::new(Arc::new(store.clone()), policy, host, metrics);
        let demo = if options.dev {
            options
                .demo_token
                .clone()
                .map(|t| Arc::new(DemoTarget::new(t)))
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        // With `listen` on port 0 and no public URL, the URL names the port actually bound.
        let mut public_url = service.policy().config.server.public_url.clone();
        if public_url.port() == Some(0) {
            let _ = public_url.set_port(Some(addr.port()));
        }
        let notifier = Arc::new(
            crate::notify::Notifier::new(
                service.clone(),
                public_url.clone(),
                options.dev,
                format!("{}-{}", hostname(), &uuid::Uuid::new_v4().to_string()[..8]),
            )
            .map_err(|e| anyhow::anyhow!("the notifier cannot start: {e}"))?,
        );
        let web = crate::http::web::Web::new(public_url)
            .map_err(|e| anyhow::anyhow!("the web UI's templates are broken: {e}"))?;
        let state = AppState {
            service: service.clone(),
            dev: options.dev,
            request_timeout,
            demo: demo.clone(),
            web: Arc::new(web),
        };
        let (tx, rx) = watch::channel(false);
        let router = crate::http::router(state, max_body);
        let mut server_rx = rx.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_rx.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        let mut notify_task = None;
        let worker = if options.no_worker {
            None
        } else {
            notify_task = Some(tokio::spawn(notifier.clone().run(rx.clone())));
            let cfg = WorkerConfig {
                id: format!("{}-{}", hostname(), &uuid::Uuid::new_v4().to_string()[..8]),
                lease_ms: jobs_cfg.lease_ms,
                concurrency: jobs_cfg.concurrency,
                provision_attempts: jobs_cfg.provision_attempts,
                retry_max_ms: jobs_cfg.retry_max_ms,
                cleanup_delay_ms: jobs_cfg.cleanup_delay_ms,
            };
            let grace = options.shutdown_grace.unwrap_or(Duration::from_secs(10));
            Some(tokio::spawn(jobs::run(service.clone(), cfg, rx, grace)))
        };
        tracing::info!(%addr, backend = ?store.backend(), "Sallyport is serving");
        Ok(App {
            addr,
            service,
            demo,
            store,
            shutdown: tx,
            server,
            worker,
            notify_task,
            options,
        })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, finish in-flight requests and jobs (up to the grace period), close.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        if let Some(w) = self.worker {
            let _ = w.await;
        }
        if let Some(n) = self.notify_task {
            let _ = n.await;
        }
        self.store.close().await;
    }

    /// Serve until SIGINT or SIGTERM; reload the configuration on SIGHUP.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => self.reload().await,
            }
        }
        tracing::info!("shutting down");
        self.shutdown().await;
        Ok(())
    }

    /// Re-read the configuration file; keep the current policy if it is invalid.
    pub async fn reload(&self) {
        let Some(path) = &self.options.config_path else {
            tracing::warn!("SIGHUP: no configuration file to reload");
            return;
        };
        let config = match Config::load(path, ParseOptions::default()) {
            Ok(c) => c,
            Err(p) => {
                tracing::error!(file = %path.display(), problems = %p, "reload refused: the new configuration is invalid; keeping the current one");
                return;
            }
        };
        match self.service.reload(config).await {
            Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
            Err(p) => {
                tracing::error!(file = %path.display(), problems = %p, "reload refused: the new configuration is invalid; keeping the current one")
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sallyport".into())
}
