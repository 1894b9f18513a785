//! Hostile guests: each fails closed with a clear, typed error while the host keeps answering.

use std::time::Duration;

use sallyport::plugin::test_guests as g;
use sallyport::plugin::{
    ConnectorError, ConnectorFailure, Decision, GrantRequest, HostConfig, LoadError, PluginError,
    World,
};
use sallyport::secret::SecretStore;

use crate::support::*;

const QUORUM_ONE_OF_BOB: &str = r#"{"stages":[{"users":["bob"],"count":1}]}"#;

fn ctx() -> sallyport::plugin::EvaluationContext {
    eval_ctx(
        access_request(principal("alice", &[]), 3600, "deploy"),
        QUORUM_ONE_OF_BOB,
        vec![review(principal("bob", &[]), true)],
        MONDAY_10_UTC,
    )
}

/// A healthy plugin still answers correctly: the host survived whatever came before.
async fn host_still_answers(host: &sallyport::plugin::PluginHost) {
    let quorum = builtin(host, "quorum", None, &SecretStore::new());
    let ev = quorum.evaluate(&ctx()).await.expect("quorum evaluates");
    assert!(
        matches!(
            ev.decision,
            Decision::Approve {
                break_glass: false,
                ..
            }
        ),
        "{:?}",
        ev.decision
    );
}

#[tokio::test]
async fn infinite_loop_times_out_while_others_are_served() {
    let host = host();
    let looping = guest(&host, g::ABUSE_LOOP, &approval_manifest("loop", "")).expect("load");
    let quorum = builtin(&host, "quorum", None, &SecretStore::new());
    let c = ctx();
    // Run the loop and a healthy evaluation side by side on the same host.
    let (looped, healthy) = tokio::join!(looping.evaluate(&c), quorum.evaluate(&c));
    match looped {
        Err(PluginError::Timeout { plugin, limit }) => {
            assert_eq!(plugin, "loop");
            assert_eq!(
                limit,
                Duration::from_millis(100),
                "approval default deadline"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(matches!(
        healthy.expect("healthy").decision,
        Decision::Approve { .. }
    ));
    host_still_answers(&host).await;
}

#[tokio::test]
async fn manifest_deadline_applies() {
    let host = host();
    let looping = guest(
        &host,
        g::ABUSE_LOOP,
        &approval_manifest("loop", "[limits]\ntimeout-ms = 30\n"),
    )
    .expect("load");
    let err = looping.evaluate(&ctx()).await.expect_err("must time out");
    assert_eq!(
        err,
        PluginError::Timeout {
            plugin: "loop".into(),
            limit: Duration::from_millis(30)
        }
    );
    assert!(err.to_string().contains("timed out after 30 ms"), "{err}");
}

#[tokio::test]
async fn memory_bomb_hits_the_cap() {
    let host = host();
    let bomb = guest(
        &host,
        g::ABUSE_MEMORY_BOMB,
        &approval_manifest("bomb", "[limits]\nmemory-mib = 16\ntimeout-ms = 2000\n"),
    )
    .expect("load");
    let err = bomb.evaluate(&ctx()).await.expect_err("must fail");
    assert_eq!(
        err,
        PluginError::OutOfMemory {
            plugin: "bomb".into(),
            limit_bytes: 16 << 20
        }
    );
    assert!(err.to_string().contains("memory limit of 16 MiB"), "{err}");
    host_still_answers(&host).await;
}

#[tokio::test]
async fn memory_bomb_default_cap_is_32_mib() {
    let host = host();
    let bomb = guest(
        &host,
        g::ABUSE_MEMORY_BOMB,
        &approval_manifest("bomb", "[limits]\ntimeout-ms = 2000\n"),
    )
    .expect("load");
    match bomb.evaluate(&ctx()).await {
        Err(PluginError::OutOfMemory { limit_bytes, .. }) => assert_eq!(limit_bytes, 32 << 20),
        other => panic!("expected out of memory, got {other:?}"),
    }
}

#[tokio::test]
async fn panic_is_a_trap_with_its_message() {
    let host = host();
    let p = guest(&host, g::ABUSE_PANIC, &approval_manifest("panicky", "")).expect("load");
    match p.evaluate(&ctx()).await {
        Err(PluginError::Trap { plugin, message }) => {
            assert_eq!(plugin, "panicky");
            assert!(
                message.contains("abuse guest panicked on purpose"),
                "panic message should be reported: {message}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    host_still_answers(&host).await;
}

#[tokio::test]
async fn garbage_answers_are_malformed() {
    let host = host();
    let p = guest(&host, g::ABUSE_GARBAGE, &approval_manifest("garbage", "")).expect("load");
    for (mode, needle) in [
        ("empty-pending", "no requirements"),
        ("zero-needed", "needs 0 approvals"),
        ("no-one", "no users and no groups"),
        ("huge-reason", "limit is 4096"),
    ] {
        let mut c = ctx();
        c.settings = format!(r#"{{"mode":"{mode}"}}"#);
        match p.evaluate(&c).await {
            Err(PluginError::Malformed { plugin, reason }) => {
                assert_eq!(plugin, "garbage");
                assert!(reason.contains(needle), "{mode}: {reason}");
            }
            other => panic!("{mode}: expected malformed, got {other:?}"),
        }
    }
    let mut c = ctx();
    c.settings = r#"{"mode":"err"}"#.into();
    match p.evaluate(&c).await {
        Err(PluginError::Reported { message, .. }) => {
            assert!(message.contains("garbage on purpose"))
        }
        other => panic!("expected a reported error, got {other:?}"),
    }
}

#[tokio::test]
async fn ungranted_import_is_refused_at_load() {
    let host = host();
    // `sneaky` imports http and aws; granting only http must refuse it.
    let err = guest(
        &host,
        g::ABUSE_SNEAKY,
        &connector_manifest("sneaky", "[capabilities.http]\nallow = []\n"),
    )
    .expect_err("aws is not granted");
    match &err {
        LoadError::NotGranted {
            plugin,
            import,
            capability,
        } => {
            assert_eq!(plugin, "sneaky");
            assert_eq!(*capability, "aws");
            assert!(import.starts_with("sallyport:plugin/aws@0.1"), "{import}");
        }
        other => panic!("expected NotGranted, got {other:?}"),
    }
    assert!(err.to_string().contains("[capabilities.aws]"), "{err}");
    // With no grants at all, the first refused capability is named too.
    let err = guest(&host, g::ABUSE_SNEAKY, &connector_manifest("sneaky", "")).expect_err("none");
    assert!(matches!(err, LoadError::NotGranted { .. }), "{err:?}");
}

#[tokio::test]
async fn granted_but_unconfigured_aws_answers_not_available() {
    let host = host();
    let p = guest(
        &host,
        g::ABUSE_SNEAKY,
        &connector_manifest(
            "sneaky",
            "[capabilities.http]\nallow = []\n[capabilities.aws]\narns = [\"arn:aws:iam::*:role/x\"]\n",
        ),
    )
    .expect("load");
    let req = GrantRequest {
        request: access_request(principal("alice", &[]), 3600, "x"),
        settings: r#"{"aws_role":"arn:aws:iam::123456789012:role/x"}"#.into(),
        expires_at: MONDAY_10_UTC + 3_600_000,
        now: MONDAY_10_UTC,
    };
    match p.grant(&req).await {
        Err(ConnectorFailure::Connector {
            error: ConnectorError::Failed(msg),
            ..
        }) => assert!(msg.contains("CapabilityNotAvailable"), "{msg}"),
        other => panic!("expected the connector to fail, got {other:?}"),
    }
    // And an origin that is not allowed is refused by the host, not fetched.
    let req = GrantRequest {
        settings: r#"{"url":"http://127.0.0.1:9/"}"#.into(),
        ..req
    };
    match p.grant(&req).await {
        Err(ConnectorFailure::Connector {
            error: ConnectorError::Failed(msg),
            ..
        }) => assert!(
            msg.contains("NotAllowed") && msg.contains("allow-list"),
            "{msg}"
        ),
        other => panic!("expected not-allowed, got {other:?}"),
    }
}

#[tokio::test]
async fn filesystem_and_clock_imports_are_forbidden() {
    let host = host();
    let err = guest(&host, g::ABUSE_FS_READER, &approval_manifest("fs", "")).expect_err("refused");
    match &err {
        LoadError::Forbidden { import, .. } => {
            assert!(
                import.starts_with("wasi:filesystem/") || import.starts_with("wasi:clocks/"),
                "{import}"
            )
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn future_api_version_is_refused() {
    let host = host();
    let err =
        guest(&host, g::ABUSE_FUTURE_API, &approval_manifest("future", "")).expect_err("refused");
    match &err {
        LoadError::UnsupportedApi { found, .. } => assert!(found.contains("@0.2.0"), "{found}"),
        other => panic!("expected UnsupportedApi, got {other:?}"),
    }
    assert!(err.to_string().contains("0.1.x"), "{err}");
}

#[tokio::test]
async fn manifest_api_version_must_match_the_component() {
    let host = host();
    let err = guest(
        &host,
        g::ABUSE_PANIC,
        &approval_manifest("panicky", "api-version = \"0.1.3\"\n"),
    )
    .expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("api-version 0.1.3") && msg.contains("sallyport:plugin@0.1.0"),
        "{msg}"
    );
}

#[tokio::test]
async fn full_pool_is_busy_not_access() {
    let host = host_with(HostConfig {
        slots: 1,
        queue_wait: Duration::from_millis(20),
        ..HostConfig::default()
    });
    let looping = guest(
        &host,
        g::ABUSE_LOOP,
        &approval_manifest("loop", "[limits]\ntimeout-ms = 1000\n"),
    )
    .expect("load");
    let quorum = builtin(&host, "quorum", None, &SecretStore::new());
    let c = ctx();
    let (looped, queued) = tokio::join!(looping.evaluate(&c), async {
        // Give the loop time to take the only slot.
        tokio::time::sleep(Duration::from_millis(50)).await;
        quorum.evaluate(&c).await
    });
    assert!(
        matches!(looped, Err(PluginError::Timeout { .. })),
        "{looped:?}"
    );
    match queued {
        Err(e @ PluginError::Busy { .. }) => {
            assert_eq!(e.code(), "plugin_busy");
            assert!(
                e.to_string().contains("all 1 sandbox slots are busy"),
                "{e}"
            );
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    // Once the slot is free again, calls succeed.
    host_still_answers(&host).await;
}

#[tokio::test]
async fn wrong_world_calls_are_refused() {
    let host = host();
    let http = builtin(&host, "http", None, &SecretStore::new());
    assert_eq!(http.world(), World::Connector);
    match http.evaluate(&ctx()).await {
        Err(PluginError::WrongWorld {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (World::Approval, World::Connector))
        }
        other => panic!("expected WrongWorld, got {other:?}"),
    }
}

#[tokio::test]
async fn manifest_world_must_match_component() {
    let host = host();
    let err =
        guest(&host, g::ABUSE_PANIC, &connector_manifest("panicky", "")).expect_err("mismatch");
    assert!(matches!(err, LoadError::WorldMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn components_are_compiled_once_per_hash() {
    let host = host();
    let a = builtin(&host, "quorum", None, &SecretStore::new());
    let b = builtin(&host, "quorum", None, &SecretStore::new());
    assert_eq!(host.cached_components(), 1, "same bytes, one compilation");
    let _c = builtin(&host, "http", None, &SecretStore::new());
    assert_eq!(host.cached_components(), 2);
    assert_eq!(a.identity(), b.identity());
    assert_eq!(a.identity().sha256.len(), 64);
    assert_eq!(a.identity().name, "quorum");
    assert_eq!(a.identity().version, "0.1.0");
}
