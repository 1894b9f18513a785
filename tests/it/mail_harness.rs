//! A real SMTP server for mail tests: npm `maildev@2` (locked in `tests/mail`) under Node,
//! started per test on random loopback ports ([`start`]) or on a given SMTP port
//! ([`start_on`], e.g. to bring the server up only after a send has failed). Its web API lists
//! what it received ([`Maildev::messages`], [`Maildev::wait_for`]) and empties the mailbox
//! ([`Maildev::clear`]). Plain SMTP, no authentication, no STARTTLS.
//!
//! When Node or the npm package is missing (`npm ci --prefix tests/mail`), [`start`] returns
//! `None` and the test skips itself, unless `SALLYPORT_REQUIRE_MAIL` is set (`.ci/run` sets it):
//! then the test fails. Every wait is bounded.

#![allow(dead_code, reason = "each suite uses a different subset")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long maildev may take to start.
const START: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// One HTTP request or SMTP probe to maildev.
const REQUEST: Duration = Duration::from_secs(5);
/// Starts tried when a port picked by [`free_port`] was taken before maildev bound it.
const ATTEMPTS: usize = 3;
/// maildev's entry point, relative to `tests/mail`.
const BIN: &str = "node_modules/maildev/bin/maildev";

pub use crate::harness::free_port;
use crate::harness::which;

/// Skip (`None`) when maildev is missing, or fail when CI requires the mail tests.
fn missing<T>(what: &str) -> Option<T> {
    crate::harness::missing("SALLYPORT_REQUIRE_MAIL", what)
}

/// Start maildev on random loopback ports; `None` (skip) when Node or the npm package is
/// missing.
pub async fn start() -> Option<Maildev> {
    start_with(None).await
}

/// Start maildev with its SMTP server on `127.0.0.1:smtp_port` (the web API on a random port);
/// `None` (skip) when Node or the npm package is missing.
pub async fn start_on(smtp_port: u16) -> Option<Maildev> {
    start_with(Some(smtp_port)).await
}

async fn start_with(smtp_port: Option<u16>) -> Option<Maildev> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mail");
    let Some(node) = which("node") else {
        return missing("`node` is not installed (Node 18 or later)");
    };
    if !dir.join(BIN).is_file() {
        return missing(
            "tests/mail/node_modules/maildev is missing (run `npm ci --prefix tests/mail`)",
        );
    }
    let mut attempt = 1;
    loop {
        let smtp = smtp_port.unwrap_or_else(free_port);
        let web = loop {
            let p = free_port();
            if p != smtp {
                break p;
            }
        };
        match Maildev::launch(&node, &dir, smtp, web).await {
            Ok(m) => return Some(m),
            // A port was taken between free_port and maildev's bind: try other ports.
            Err(log) if log.contains("EADDRINUSE") && attempt < ATTEMPTS => attempt += 1,
            Err(log) => panic!("maildev exited while starting (SMTP {smtp}, web {web}): {log}"),
        }
    }
}

/// maildev for one test; killed when dropped.
#[derive(Debug)]
pub struct Maildev {
    smtp_port: u16,
    web_port: u16,
    child: Child,
    http: reqwest::Client,
    /// maildev's stdout and stderr.
    log: tempfile::NamedTempFile,
    /// Where maildev keeps the messages (`--mail-directory`); removed after the kill.
    _mail_dir: tempfile::TempDir,
}

impl Maildev {
    /// Spawn maildev and wait (bounded) until both its web API and its SMTP server answer;
    /// `Err(exit status and log)` when it exits meanwhile.
    async fn launch(
        node: &Path,
        dir: &Path,
        smtp_port: u16,
        web_port: u16,
    ) -> Result<Self, String> {
        let mail_dir = tempfile::tempdir().expect("maildev mail directory");
        let log = tempfile::NamedTempFile::new().expect("maildev log file");
        let out = log.as_file().try_clone().expect("maildev log file");
        let err = log.as_file().try_clone().expect("maildev log file");
        let mut cmd = Command::new(node);
        cmd.arg(dir.join(BIN))
            .args(["--ip", "127.0.0.1", "--smtp", &smtp_port.to_string()])
            .args(["--web-ip", "127.0.0.1", "--web", &web_port.to_string()])
            .arg("--mail-directory")
            .arg(mail_dir.path())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // maildev reads its defaults from MAILDEV_* variables (authentication, relaying, ...).
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MAILDEV_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .expect("start node tests/mail/node_modules/maildev/bin/maildev");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST)
            .build()
            .expect("HTTP client for maildev");
        let mut m = Maildev {
            smtp_port,
            web_port,
            child,
            http,
            log,
            _mail_dir: mail_dir,
        };
        let list = format!("{}/email", m.web_url());
        let start = Instant::now();
        loop {
            if let Ok(r) = m.http.get(&list).send().await
                && r.status() == reqwest::StatusCode::OK
                && smtp_ready(smtp_port).await
            {
                return Ok(m);
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(format!("{status}\n{}", m.log()));
            }
            assert!(
                start.elapsed() < START,
                "maildev did not start within {START:?} (SMTP {smtp_port}, web {web_port}):\n{}",
                m.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The SMTP server's port on 127.0.0.1.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// `http://127.0.0.1:PORT`, the web interface and API.
    pub fn web_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.web_port)
    }

    /// What maildev printed so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Every message received since the start or the last [`Maildev::clear`], oldest first.
    pub async fn messages(&self) -> Vec<Mail> {
        let url = format!("{}/email", self.web_url());
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", self.log()));
        let status = r.status();
        let body = r
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        assert!(status.is_success(), "GET {url}: {status}: {body}");
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"));
        v.as_array()
            .unwrap_or_else(|| panic!("GET {url}: not a JSON array: {body}"))
            .iter()
            .map(Mail::from_json)
            .collect()
    }

    /// Delete every message.
    pub async fn clear(&self) {
        let url = format!("{}/email/all", self.web_url());
        let r = self
            .http
            .delete(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE {url}: {e}\n{}", self.log()));
        let status = r.status();
        assert!(
            status.is_success(),
            "DELETE {url}: {status}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Wait (bounded, polling) for the first message that satisfies `pred`; panic after
    /// `timeout` naming `what` and listing the messages received.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Mail) -> bool,
    ) -> Mail {
        let start = Instant::now();
        loop {
            let mut seen = self.messages().await;
            if let Some(i) = seen.iter().position(&pred) {
                return seen.swap_remove(i);
            }
            if start.elapsed() >= timeout {
                let list: Vec<String> = seen
                    .iter()
                    .map(|m| format!("  {:?} from {:?} to {:?}", m.subject, m.from, m.to))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for mail: {what}; {} received:\n{}",
                    seen.len(),
                    list.join("\n")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Maildev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the SMTP server answers within [`REQUEST`].
async fn smtp_ready(port: u16) -> bool {
    matches!(
        tokio::time::timeout(REQUEST, smtp_probe(port)).await,
        Ok(Ok(true))
    )
}

/// Whether the SMTP server greets (`220`) and takes `QUIT` (`221`): a clean conversation, as
/// maildev exits on some connection errors.
async fn smtp_probe(port: u16) -> std::io::Result<bool> {
    let mut s = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await?);
    let mut line = String::new();
    s.read_line(&mut line).await?;
    if !line.starts_with("220") {
        return Ok(false);
    }
    s.get_mut().write_all(b"QUIT\r\n").await?;
    line.clear();
    s.read_line(&mut line).await?;
    Ok(line.starts_with("221"))
}

/// A message as maildev parsed it (`GET /email`); missing fields are empty.
#[derive(Debug, Clone)]
pub struct Mail {
    /// maildev's id.
    pub id: String,
    /// The decoded `Subject`.
    pub subject: String,
    /// The addresses of the `To` header (not Cc, not the envelope).
    pub to: Vec<String>,
    /// The addresses of the `From` header.
    pub from: Vec<String>,
    /// The envelope's recipients (`RCPT TO`), Bcc included.
    pub envelope_to: Vec<String>,
    /// The text/plain part (empty when there is none).
    pub text: String,
    /// The text/html part (empty when there is none).
    pub html: String,
    /// The headers: an object keyed by lower-case name, values mostly strings.
    pub headers: Value,
    /// maildev's whole JSON object (cc, attachments, time, size, ...).
    pub raw: Value,
}

impl Mail {
    fn from_json(v: &Value) -> Mail {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let addresses = |a: &Value| -> Vec<String> {
            a.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["address"].as_str())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Mail {
            id: s("id"),
            subject: s("subject"),
            to: addresses(&v["to"]),
            from: addresses(&v["from"]),
            envelope_to: addresses(&v["envelope"]["to"]),
            text: s("text"),
            html: s("html"),
            headers: v["headers"].clone(),
            raw: v.clone(),
        }
    }

    /// A header's value by case-insensitive name, when it is a single string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers[name.to_ascii_lowercase()].as_str()
    }
}
