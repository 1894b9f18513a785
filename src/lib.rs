//! # Sallyport
//!
//! A self-hosted just-in-time access server: nobody holds standing access; people request an
//! entitlement for a while with a reason, a policy decides who must approve, a connector grants
//! exactly that access for exactly that window and takes it away when the window ends, and every
//! step lands in a tamper-evident audit log.
//!
//! ## Bird's-eye view
//!
//! A request enters through the JSON API (or the CLI, which only speaks that API). The
//! [`service`] turns it into a pure [`domain`] transition, asks the entitlement's approval plugin
//! (a sandboxed WebAssembly component, [`plugin`]) what it thinks, and persists the new state
//! together with its audit events and the jobs it causes in one transaction ([`store`]). The job
//! worker ([`jobs`]) then provisions through the connector plugin, ends grants at `expires_at`,
//! times out undecided requests and retries revocations until they succeed. Plugins hold no
//! ambient authority: the host holds every credential and checks every capability call against
//! the plugin's manifest. The server core never trusts a plugin: any failure of a plugin is a
//! denial or a failed grant, never access.
//!
//! ## Code map
//!
//! - [`domain`]: the lifecycle as data and pure transitions `(state, action, now) -> (state,
//!   events, jobs)`; no I/O, no clock reads. Property-tested.
//! - [`service`]: the application core used by the API and the worker: validation against the
//!   policy, approval evaluation, compare-and-set retries, tokens, visibility rules. Holds the
//!   only clock read ([`service::now_ms`]).
//! - [`store`]: the only module that speaks SQL. One [`store::Store`] trait; one SQL
//!   implementation for SQLite and PostgreSQL with their differences in `store/sqlite.rs` and
//!   `store/postgres.rs`; migrations in `migrations/`.
//! - [`jobs`]: the durable queue's worker (provision, revoke, expire, time out).
//! - [`notify`]: notifications. The notifier follows the audit chain and turns its events into
//!   rows of the `deliveries` outbox (reviewers, requester, watchers, webhooks), then sends them
//!   (lettre SMTP, signed JSON / Slack / Teams webhooks, or the dev outbox page) with retry and
//!   backoff. Review mails carry one-click approval links. The request path pays nothing.
//! - [`audit`]: the hash chain and its verifier.
//! - [`plugin`]: the only user of wasmtime. Loads components, checks their imports against their
//!   manifest's grants, runs each call in a fresh sandbox with a deadline and a memory cap.
//!   `plugin/bindings.rs` is the only `bindgen!` site; `plugin/caps.rs` holds the host
//!   capabilities plugins may import (`log`, `http`, `aws` with its ARN allow-list, and
//!   `azure` with its scope allow-list).
//! - [`cloud`]: the cloud SDK calls behind the capabilities. `cloud/aws.rs` (aws-sdk-sts,
//!   aws-sdk-iam): AssumeRole clamped to [900 s, role maximum] and the grant's end (retried at an
//!   hour under role chaining), session policy (an Allow until the end only when nothing else
//!   narrows the session) and tags, IAM inline/managed policies and groups on entities whose ARN
//!   IAM confirms (path and account), errors as clear messages, throttling retried. `cloud/azure.rs` (azure_identity for Entra ID tokens over Sallyport's own HTTP
//!   client, then ARM REST): PIM `AdminAssign` schedule requests with an `AfterDuration`
//!   expiration and `AdminRemove`, plain role assignments, role definition and Graph user
//!   lookups; `Retry-After` honoured within the plugin call's deadline, one token renewal on a
//!   rejected token, `PrincipalNotFound` waited out; names derived from the request so retries
//!   are idempotent. `plugins/azure-rbac/src/ids.rs` (scopes, GUIDs, role ids) is shared by the
//!   plugin and the host.
//! - Action approvals: an action request is a [`domain::Request`] with
//!   [`domain::ActionDetails`] (kind, canonical parameters and their digest, the pipeline's
//!   workload identity); `domain/action.rs` checks parameters against the kind's schema. It has
//!   no connector: approval makes it usable at once until `valid_until`, consuming ends it.
//!   [`workload`] verifies pipelines' OIDC workload tokens against their issuer's JWKS
//!   (jsonwebtoken); [`attest`] signs attestations (Ed25519 with ring, built by hand so the
//!   tests' verifier is independent) and serves the JWKS; `service/actions.rs` files, signs and
//!   consumes them.
//! - [`config`]: the policy file (TOML), checked with precise, located messages;
//!   [`policy`]: the configuration with its plugins loaded and every entitlement's settings
//!   validated by its plugins. Rebuilt on SIGHUP; a failed rebuild keeps the old one.
//! - [`http`]: the only module that knows HTTP: the API under `/api/v1`, its OpenAPI document,
//!   health, metrics, and (dev mode) the dev login and the demo target. `http/web/` is the web
//!   UI: pages rendered from `web/templates` (handlebars, strict, embedded; one typed view per
//!   page), browser sessions (tokens of scope `web` in an `HttpOnly` cookie), CSRF, OIDC
//!   sign-in (`openidconnect`, PKCE + nonce), the CLI's browser login, rate limits.
//! - [`app`]: assembling and running a server, graceful shutdown, reload.
//! - [`cli`]: the command line (clap): server, administration, plugin tools, and the client.
//! - [`metrics`]: Prometheus counters; [`secret`]: secret values that never print.
//! - `plugins/`: guest crates (built-in plugins and test-only abuse guests), compiled to
//!   `wasm32-wasip2` by `build.rs` and embedded in the binary.
//!
//! ## Architecture invariants
//!
//! - **Fail closed.** A plugin trap, timeout, memory exhaustion, full pool or malformed answer is a
//!   typed [`plugin::PluginError`]; callers can only turn it into a denial or a failed grant.
//! - **State, audit and jobs move together.** Every transition is written with its audit events
//!   and jobs in one transaction, with compare-and-set on the request's version: two approvers
//!   clicking at once grant exactly once.
//! - **The domain is pure.** `domain/` reads no clock and does no I/O; the requester's own review
//!   never counts unless the entitlement enables break-glass, and a reviewer counts only if the
//!   approval plugin names them.
//! - **Jobs are idempotent.** A job reloads its request and does nothing if it moved on; a
//!   crash at any point re-runs at most an idempotent connector call.
//! - **Revocation never gives up.** A failing revoke is retried with backoff forever, and shows
//!   on the request meanwhile.
//! - **No ambient authority.** Plugins get no filesystem, environment, sockets or clock; a plugin
//!   importing a capability its manifest does not grant is refused at load.
//! - **Plugins read no clock.** Every time a plugin needs (`now`, `expires-at`) is passed in.
//! - **Secrets never print.** [`secret::Secret`] redacts itself; the `http` capability injects
//!   secret header values by name so plugins never see them; API tokens are stored hashed.
//!   Minted cloud credentials go to the caller only: never stored, logged or audited (the
//!   audit event records the access key id and expiry).
//! - **Sessions are tokens.** A browser session is a token of scope `web`, an API token one of
//!   scope `api`; each works only where its scope says, and both are stored hashed and
//!   revocable; expired or revoked ones are deleted 30 days later (the audit log keeps their
//!   history). Single-use secrets (OIDC state, CLI login codes) are stored hashed and taken
//!   with one `DELETE … RETURNING`, so a refused OIDC callback spends its state too.
//! - **Pages change nothing on GET,** and every form POST is CSRF-checked before any write.
//!   Pages offer only what the domain would accept (the review form by
//!   `Request::may_review`); the service decides anyway.
//! - **Approval links are no skeleton keys.** A link's 256-bit token is stored only hashed,
//!   bound to the request, the reviewer and the action, used once (with its sibling), dead
//!   once the request is decided or would time out. GET only shows a confirmation page; the
//!   POST acts, and only for the reviewer signed in (unless the entitlement sets
//!   `link_only_approval`). Outbox rows hold no secrets: links are minted at send time.
//! - **Connectors remove only what they made.** A revoke (or rollback) of AWS or Azure access
//!   targets only what that request created: the `azure` capability derives the names of its
//!   schedule requests and role assignments from the request, and never removes an assignment
//!   the principal already held (`RoleAssignmentExists` is reported as `preexisting`). aws-iam's
//!   attach and group grants are the exception the README names: they are not scoped to one
//!   request, so one person's overlapping grants of one entitlement end together. The AWS
//!   connectors revoke (and aws-sts mints for) what the grant's handle recorded, not what the
//!   settings say now. The end-of-grant clean-up call after an early revoke happens only for
//!   connectors whose manifest asks for it (`cleanup-at-end`), because for access not scoped to
//!   one request a second revoke could take a newer grant's away.
//! - **An approval is for one action, once.** An attestation names the action kind (its
//!   `aud`), the digest of the exact parameters and the request (`jti`); consuming it is a
//!   compare-and-set transition, so of two consumers exactly one succeeds, and parameters that
//!   differ from the digest are refused before anything is written. Attestations are never
//!   stored (Ed25519 is deterministic: they are signed again on fetch), and every key that
//!   signed one stays published until that token has expired.
//! - **Pipelines prove who they are.** A workload token counts only with a signature from its
//!   issuer's published keys (asymmetric algorithms only), the rule's audience, an unexpired
//!   `exp` and a subject the action kind's pattern admits; its wait token reads that one
//!   request and nothing else.
//! - **The CLI is a client.** Apart from server administration commands that read the database
//!   directly (`audit`, `token create`), it talks to a server only through the JSON API.

#![recursion_limit = "256"]

pub mod app;
pub mod attest;
pub mod audit;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod plugin;
pub mod policy;
pub mod secret;
pub mod service;
pub mod store;
pub mod workload;
