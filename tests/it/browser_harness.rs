//! Partners for browser tests, each started per test on a random loopback port:
//! - [`OidcProvider`]: a real OpenID provider (npm `oidc-provider@9`, `tests/oidc/provider.mjs`,
//!   under Node) with one confidential client and the accounts alice, bob, carol and dave;
//! - [`Browser`]: headless Chromium driven through `chromedriver` with `fantoccini`.
//!
//! When a partner is not installed (`node` and `npm ci --prefix tests/oidc`; Debian `chromium`
//! and `chromium-driver`) its `start` returns `None` and the test skips itself, unless
//! `SALLYPORT_REQUIRE_BROWSER` is set (`.ci/run` sets it): then the test fails.
//! [`screenshot`] writes to `$SALLYPORT_SCREENSHOTS`, else `<target dir>/screenshots`.
//!
//! Needs the dev-dependency `rustls = { version = "0.23", default-features = false,
//! features = ["ring"] }` (see [`Browser::start`]).

#![allow(dead_code, reason = "each suite uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

/// How long a partner may take to start.
const START: Duration = Duration::from_secs(30);
/// How long a step of the sign-in may take.
const STEP: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

use crate::harness::{free_port, which};

/// Skip (`None`) when a partner is missing, or fail when CI requires the browser tests.
fn missing<T>(what: &str) -> Option<T> {
    crate::harness::missing("SALLYPORT_REQUIRE_BROWSER", what)
}

/// The Chromium flags of DESIGN.md section 10 (plus the window size and a fresh profile).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// A real OpenID provider for one test; killed when dropped.
///
/// Its login page takes any of the login names alice, bob, carol, dave (see
/// `tests/oidc/provider.mjs` for their claims) and [`oidc_sign_in`] fills it in. Every
/// authorization request shows the login page; consent is automatic.
#[derive(Debug)]
pub struct OidcProvider {
    /// `http://127.0.0.1:PORT`, also the discovery base.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    child: Child,
    /// The provider's stdout and stderr.
    log: tempfile::NamedTempFile,
}

impl OidcProvider {
    /// Start a provider whose one client may redirect to `redirect_uris`; `None` (skip) when
    /// Node or the npm packages are missing.
    pub async fn start(redirect_uris: &[String]) -> Option<OidcProvider> {
        Self::start_with(redirect_uris, &[], "").await
    }

    /// A provider that also serves pipelines: each of `subjects` is a client whose
    /// client-credentials tokens are RS256 JWTs with that `sub` and `aud = audience` (see
    /// [`OidcProvider::workload_token`]).
    pub async fn with_workloads(subjects: &[&str], audience: &str) -> Option<OidcProvider> {
        Self::start_with(&["http://127.0.0.1:9/cb".to_owned()], subjects, audience).await
    }

    /// A workload token for `subject`, from the provider's token endpoint.
    pub async fn workload_token(&self, subject: &str) -> String {
        let res = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "deploy"),
                ("client_id", subject),
                ("client_secret", &self.client_secret),
            ])
            .send()
            .await
            .expect("token endpoint");
        let status = res.status();
        let v: serde_json::Value = res.json().await.expect("token JSON");
        assert!(
            status.is_success(),
            "token endpoint answered {status}: {v}\n{}",
            self.log()
        );
        v["access_token"].as_str().expect("access_token").to_owned()
    }

    async fn start_with(
        redirect_uris: &[String],
        workloads: &[&str],
        audience: &str,
    ) -> Option<OidcProvider> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        let Some(node) = which("node") else {
            return missing("`node` is not installed (Node 20 or later)");
        };
        if !dir
            .join("node_modules/oidc-provider/package.json")
            .is_file()
        {
            return missing(
                "tests/oidc/node_modules/oidc-provider is missing (run `npm ci --prefix tests/oidc`)",
            );
        }
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let client_id = "sallyport-test".to_owned();
        let client_secret = format!("test-secret-{port}-{}", std::process::id());
        let log = tempfile::NamedTempFile::new().expect("provider log file");
        let out = log.as_file().try_clone().expect("provider log file");
        let err = log.as_file().try_clone().expect("provider log file");
        let child = Command::new(node)
            .arg(dir.join("provider.mjs"))
            .current_dir(&dir)
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_CLIENT_ID", &client_id)
            .env("OIDC_CLIENT_SECRET", &client_secret)
            .env("OIDC_REDIRECT_URIS", redirect_uris.join(","))
            .env("OIDC_WORKLOAD_CLIENTS", workloads.join(","))
            .env("OIDC_WORKLOAD_AUDIENCE", audience)
            .env("OIDC_WORKLOAD_SECRET", &client_secret)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/oidc/provider.mjs");
        let mut p = OidcProvider {
            issuer,
            client_id,
            client_secret,
            child,
            log,
        };
        let discovery = p.discovery_url();
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(&discovery).send().await
                && r.status().is_success()
                && let Ok(doc) = r.json::<serde_json::Value>().await
                && doc["issuer"] == p.issuer.as_str()
            {
                break;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("the OpenID provider exited ({status}):\n{}", p.log());
            }
            assert!(
                start.elapsed() < START,
                "the OpenID provider did not start within {START:?}:\n{}",
                p.log()
            );
            tokio::time::sleep(POLL).await;
        }
        Some(p)
    }

    /// `ISSUER/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// What the provider printed so far (warnings, errors), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

/// Headless Chromium with a fresh profile, driven by `fantoccini` through its own
/// `chromedriver`. Call [`Browser::close`] at the end; dropping it kills chromedriver and the
/// browser (its process group) anyway.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver and open a session; `None` (skip) when chromium or chromedriver is
    /// missing.
    pub async fn start() -> Option<Browser> {
        let Some(chromedriver) = which("chromedriver")
            .or_else(|| Some(PathBuf::from("/usr/bin/chromedriver")).filter(|p| p.is_file()))
        else {
            return missing("chromedriver is not installed (apt-get install chromium-driver)");
        };
        let Some(chromium) = Some(PathBuf::from("/usr/bin/chromium"))
            .filter(|p| p.is_file())
            .or_else(|| which("chromium"))
        else {
            return missing("chromium is not installed (apt-get install chromium)");
        };
        let port = free_port();
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // Its own process group, so that Drop can kill the browser it starts too.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut driver = cmd.spawn().expect("start chromedriver");
        let profile = tempfile::tempdir().expect("chromium profile directory");

        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && let Ok(s) = r.json::<serde_json::Value>().await
                && s["value"]["ready"] == true
            {
                break;
            }
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited ({status})");
            }
            assert!(
                start.elapsed() < START,
                "chromedriver did not start within {START:?}"
            );
            tokio::time::sleep(POLL).await;
        }

        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        // Both rustls back ends are linked into the tests (reqwest brings ring, fantoccini's
        // hyper-rustls aws-lc-rs), so rustls cannot choose one itself: the first
        // `install_default` in the process wins, later ones fail harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()
            .expect("rustls connector for fantoccini")
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("open a chromium session through chromedriver");
        let browser = Browser {
            client,
            driver,
            _profile: profile,
        };
        browser
            .client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            ))
            .await
            .expect("set webdriver timeouts");
        Some(browser)
    }

    /// End the session (chromedriver closes the browser); Drop then stops chromedriver.
    pub async fn close(self) {
        if let Err(e) = self.client.clone().close().await {
            eprintln!("closing the browser session: {e}");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the browser it started share a process group.
        #[cfg(unix)]
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("kill -s KILL -- -{pid}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.start_kill();
    }
}

/// Sign in at the OpenID provider's login page, where the application has just sent the
/// browser: fill in `login` (and any password field), submit, accept a consent page should one
/// appear, and wait until the browser has left the provider (redirected back to the client).
pub async fn oidc_sign_in(client: &Client, login: &str) -> anyhow::Result<()> {
    let field = match client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("input[name='login']"))
        .await
    {
        Ok(f) => f,
        Err(e) => {
            let at = client.current_url().await.map(|u| u.to_string());
            bail!("no login field of the OpenID provider within {STEP:?} (at {at:?}): {e}");
        }
    };
    let provider = client.current_url().await?;
    field.clear().await?;
    field.send_keys(login).await?;
    for pw in client
        .find_all(Locator::Css("input[type='password']"))
        .await?
    {
        pw.send_keys("any-password").await?;
    }
    client
        .find(Locator::Css(
            "form button[type='submit'], form input[type='submit']",
        ))
        .await
        .context("the provider's login form has no submit button")?
        .click()
        .await?;

    let start = Instant::now();
    loop {
        let url = client.current_url().await?;
        if url.origin() != provider.origin() {
            return Ok(());
        }
        if let Ok(e) = client
            .find(Locator::Css("#login-error, #oidc-error-description"))
            .await
        {
            let text = e.text().await.unwrap_or_default();
            bail!("the OpenID provider refused to sign in {login:?}: {text} (at {url})");
        }
        // A consent page (oidc-provider's built-in one): press its button.
        if client
            .find(Locator::Css("input[name='prompt'][value='consent']"))
            .await
            .is_ok()
            && let Ok(b) = client
                .find(Locator::Css("form button[type='submit']"))
                .await
        {
            b.click().await?;
        }
        if start.elapsed() > STEP {
            bail!("still at the OpenID provider {STEP:?} after signing in {login:?} (at {url})");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Where screenshots go: `$SALLYPORT_SCREENSHOTS`, else `<CARGO_TARGET_DIR or target>/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SALLYPORT_SCREENSHOTS") {
        return PathBuf::from(d);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("screenshots")
}

/// Save a PNG of the viewport as `<screenshot_dir>/<name>.png`.
pub async fn screenshot(client: &Client, name: &str) {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("create screenshot directory {}: {e}", dir.display()));
    let stem: String = name
        .trim_end_matches(".png")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let png = client.screenshot().await.expect("take a screenshot");
    let path = dir.join(format!("{stem}.png"));
    std::fs::write(&path, png)
        .unwrap_or_else(|e| panic!("write screenshot {}: {e}", path.display()));
    eprintln!("screenshot: {}", path.display());
}

/// Resize the browser so that its viewport is `width` x `height` CSS pixels, e.g. 390x844 for
/// a phone-width screenshot. (Headless Chromium's window is taller than its viewport.)
pub async fn set_width(client: &Client, width: u32, height: u32) {
    client
        .set_window_size(width, height)
        .await
        .expect("resize the browser window");
    let inner = client
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .expect("read the viewport size");
    let (Some(iw), Some(ih)) = (inner[0].as_u64(), inner[1].as_u64()) else {
        return;
    };
    let fix = |want: u32, got: u64| {
        u32::try_from(u64::from(want) * 2)
            .unwrap_or(u32::MAX)
            .saturating_sub(u32::try_from(got).unwrap_or(u32::MAX))
    };
    if (u64::from(width), u64::from(height)) != (iw, ih) {
        client
            .set_window_size(fix(width, iw), fix(height, ih))
            .await
            .expect("resize the browser window");
    }
}

/// Sign in at the OpenID provider without a browser: from the authorization URL the
/// application redirected to, through the provider's login page as `login`, keeping the
/// provider's cookies; returns the URL the provider finally sends the browser to (the
/// application's callback with `code` and `state`), not yet followed. At most 12 steps.
pub async fn oidc_http_sign_in(auth_url: &str, login: &str) -> anyhow::Result<url::Url> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut at = url::Url::parse(auth_url)?;
    let provider = at.origin();
    let mut jar: std::collections::BTreeMap<String, String> = Default::default();
    let mut form: Option<Vec<(&str, &str)>> = None;
    for _ in 0..12 {
        let mut req = match form.take() {
            Some(f) => http.post(at.clone()).form(&f),
            None => http.get(at.clone()),
        };
        if !jar.is_empty() {
            let cookies: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", cookies.join("; "));
        }
        let res = req.send().await?;
        for c in res.headers().get_all("set-cookie") {
            let pair = c.to_str()?.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() {
                    jar.remove(k.trim());
                } else {
                    jar.insert(k.trim().to_owned(), v.to_owned());
                }
            }
        }
        let status = res.status();
        if status.is_redirection() {
            let loc = res
                .headers()
                .get("location")
                .context("a redirect without Location")?
                .to_str()?;
            let next = at.join(loc)?;
            if next.origin() != provider {
                return Ok(next);
            }
            at = next;
            continue;
        }
        let body = res.text().await?;
        if status.is_success() && body.contains("name=\"login\"") {
            let action = body
                .split("action=\"")
                .nth(1)
                .and_then(|a| a.split('"').next())
                .context("the login form has no action")?;
            at = at.join(action)?;
            form = Some(vec![("login", login), ("password", "any-password")]);
            continue;
        }
        bail!("the OpenID provider answered {status} at {at}: {body}");
    }
    bail!("the OpenID provider did not send the browser back within 12 steps")
}

/// Save a PNG of the whole page (up to 4,000 CSS pixels tall), not just the viewport: the
/// window is made as tall as the page for the shot, then restored.
pub async fn screenshot_full(client: &Client, name: &str) {
    let dims = client
        .execute(
            "return [window.innerWidth, window.innerHeight, document.documentElement.scrollHeight];",
            vec![],
        )
        .await
        .expect("read the page size");
    let size = |i: usize| dims[i].as_u64().and_then(|v| u32::try_from(v).ok());
    let (Some(width), Some(height), Some(full)) = (size(0), size(1), size(2)) else {
        return screenshot(client, name).await;
    };
    let tall = full.clamp(height, 4000);
    if tall > height {
        set_width(client, width, tall).await;
    }
    screenshot(client, name).await;
    if tall > height {
        set_width(client, width, height).await;
    }
}
