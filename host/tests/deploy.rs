//! `deploy/`, the scale-out path (container image and Kubernetes manifests), checked offline by
//! `tests/deploy/validate_manifests.py` with the test clients' Python: every manifest against
//! the real API schemas, from pinned PyPI packages (Kubernetes' built-in kinds as of 1.29 and
//! 1.37, strict; the Gateway API, Inference Extension and Prometheus Operator CRDs' schemas with
//! their CEL rules), names, labels and quantities as the API server parses them, the references
//! between the resources (selectors, ports, names), the kustomizations' listings, the endpoint
//! picker's configuration, and the Containerfile with hadolint. The validator's self-test breaks
//! copies of the manifests (a Deployment with `replicas: "two"`, an HTTPRoute with an unknown
//! field or a mistyped weight, ...) and must see each one rejected, so a validator that passes
//! everything fails here.

mod common;

use std::process::Command;

/// Runs the validator with `args`; panics with its output unless it succeeds.
fn validate(args: &[&str]) -> String {
    let root = common::repo_root();
    let script = root.join("tests/deploy/validate_manifests.py");
    let out = Command::new(common::python())
        .arg(&script)
        .args(args)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "validate_manifests.py {args:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn deploy_manifests_match_their_schemas() {
    let out = validate(&[]);
    for kind in ["Deployment/hearth", "Service/hearth", "HTTPRoute/hearth", "InferencePool/hearth", "PodMonitor/hearth"]
    {
        assert!(out.contains(kind), "{kind} was not validated:\n{out}");
    }
    assert!(out.contains("deploy/Containerfile: hadolint"), "the Containerfile was not linted:\n{out}");
}

#[test]
fn the_validator_rejects_broken_manifests() {
    let out = validate(&["--self-test"]);
    assert!(out.contains("rejected: Deployment replicas as a string"), "{out}");
    assert!(out.contains("rejected: HTTPRoute unknown field"), "{out}");
}
