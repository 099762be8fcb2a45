//! `falaj residency check` over Terraform: one fixture per seeded violation under
//! `tests/fixtures/terraform/<case>/`, each asserting the exact rule, file and line; and the
//! real `terraform/` tree, which must pass with no violation.

use std::path::{Path, PathBuf};

use falaj_core::AllowedRegions;
use falaj_residency::{CheckError, Report, check_dir, rule};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(case: &str) -> PathBuf {
    repo_root().join("tests/fixtures/terraform").join(case)
}

fn check(case: &str) -> Report {
    check_dir(&fixture(case), &AllowedRegions::default())
        .unwrap_or_else(|e| panic!("fixture {case} could not be checked: {e}"))
}

/// `(file, line, rule)` of every violation, in report order.
fn found(report: &Report) -> Vec<(String, usize, &'static str)> {
    report
        .violations
        .iter()
        .map(|v| (v.file.to_string_lossy().replace('\\', "/"), v.line, v.rule))
        .collect()
}

fn assert_case(case: &str, expected: &[(&str, usize, &str)]) {
    let report = check(case);
    let got = found(&report);
    let want: Vec<(String, usize, &str)> = expected
        .iter()
        .map(|(f, l, r)| (f.to_string(), *l, *r))
        .collect();
    let got_cmp: Vec<(String, usize, &str)> =
        got.iter().map(|(f, l, r)| (f.clone(), *l, *r)).collect();
    assert_eq!(got_cmp, want, "case {case}: {:#?}", report.violations);
    for v in &report.violations {
        // Every message says what to do, and names the allowed region when it is about one.
        assert!(
            v.message.len() > 40,
            "case {case}: message too thin: {}",
            v.message
        );
    }
}

#[test]
fn provider_in_another_region() {
    assert_case(
        "provider-region",
        &[("main.tf", 2, rule::REGION_NOT_ALLOWED)],
    );
}

#[test]
fn aliased_provider_in_another_region() {
    assert_case(
        "provider-alias-region",
        &[("main.tf", 8, rule::REGION_NOT_ALLOWED)],
    );
}

#[test]
fn provider_without_region() {
    assert_case(
        "provider-region-missing",
        &[("main.tf", 1, rule::PROVIDER_REGION_MISSING)],
    );
}

#[test]
fn resource_region_argument() {
    assert_case(
        "resource-region",
        &[("main.tf", 7, rule::REGION_NOT_ALLOWED)],
    );
}

#[test]
fn module_region_input() {
    assert_case("module-region", &[("main.tf", 7, rule::REGION_NOT_ALLOWED)]);
}

#[test]
fn state_backend_in_another_region() {
    assert_case(
        "backend-region",
        &[("versions.tf", 5, rule::REGION_NOT_ALLOWED)],
    );
}

#[test]
fn variable_default_is_resolved() {
    // Reported where it is used (the provider) and where the value is written (the default).
    assert_case(
        "variable-default-region",
        &[
            ("main.tf", 2, rule::REGION_NOT_ALLOWED),
            ("variables.tf", 4, rule::REGION_LITERAL_NOT_ALLOWED),
        ],
    );
    let report = check("variable-default-region");
    assert!(
        report.violations[0].message.contains("var.region"),
        "{}",
        report.violations[0].message
    );
    assert!(
        report.violations[0].message.contains("us-east-1"),
        "{}",
        report.violations[0].message
    );
}

#[test]
fn region_variable_needs_validation() {
    assert_case(
        "region-variable-unvalidated",
        &[("variables.tf", 1, rule::REGION_VARIABLE_UNVALIDATED)],
    );
    let report = check("region-variable-unvalidated");
    assert!(
        report.violations[0]
            .message
            .contains("contains([\"me-central-1\"], var.region)")
    );
}

#[test]
fn computed_region_is_unverifiable() {
    assert_case(
        "region-unverifiable",
        &[("main.tf", 2, rule::REGION_UNVERIFIABLE)],
    );
}

#[test]
fn region_inside_an_arn() {
    assert_case(
        "region-in-arn",
        &[("main.tf", 6, rule::REGION_LITERAL_NOT_ALLOWED)],
    );
}

#[test]
fn region_inside_a_jsonencoded_policy() {
    assert_case(
        "region-in-policy",
        &[("main.tf", 12, rule::REGION_LITERAL_NOT_ALLOWED)],
    );
}

#[test]
fn s3_replication() {
    assert_case("s3-replication", &[("main.tf", 5, rule::S3_REPLICATION)]);
}

#[test]
fn kms_replica_key() {
    assert_case("kms-replica-key", &[("main.tf", 5, rule::KMS_REPLICA_KEY)]);
}

#[test]
fn kms_multi_region_key() {
    assert_case(
        "kms-multi-region",
        &[("main.tf", 8, rule::KMS_MULTI_REGION)],
    );
}

#[test]
fn cloudfront_distribution() {
    assert_case("cloudfront", &[("main.tf", 5, rule::GLOBAL_RESOURCE)]);
}

#[test]
fn dynamodb_table_with_replica() {
    assert_case(
        "dynamodb-global-table",
        &[("main.tf", 5, rule::CROSS_REGION_REPLICA)],
    );
}

#[test]
fn s3_transfer_acceleration() {
    assert_case(
        "transfer-acceleration",
        &[("main.tf", 5, rule::GLOBAL_RESOURCE)],
    );
}

#[test]
fn bucket_without_location() {
    assert_case(
        "bucket-without-location",
        &[("main.tf", 2, rule::BUCKET_WITHOUT_LOCATION)],
    );
}

#[test]
fn bucket_in_a_module_given_a_foreign_provider() {
    assert_case(
        "bucket-via-aliased-provider",
        &[
            ("envs/uae/main.tf", 7, rule::REGION_NOT_ALLOWED),
            ("modules/registry/main.tf", 1, rule::BUCKET_WITHOUT_LOCATION),
        ],
    );
    let report = check("bucket-via-aliased-provider");
    assert!(
        report.violations[1].message.contains("eu-west-1"),
        "{}",
        report.violations[1].message
    );
}

#[test]
fn clean_composition_passes_and_ignores_non_tf_files() {
    let report = check("clean-composition");
    assert_eq!(found(&report), vec![], "{:#?}", report.violations);
    // README.md and notes.tf.txt name foreign regions but are not Terraform.
    assert_eq!(report.files_checked, 4);
}

#[test]
fn operator_can_allow_more_regions() {
    let allowed = AllowedRegions::parse("me-central-1,us-east-1");
    let report = check_dir(&fixture("variable-default-region"), &allowed).unwrap();
    assert_eq!(found(&report), vec![], "{:#?}", report.violations);
    let report = check_dir(&fixture("provider-region"), &allowed).unwrap();
    assert_eq!(
        found(&report),
        vec![("main.tf".to_string(), 2, rule::REGION_NOT_ALLOWED)]
    );
}

#[test]
fn unparsable_file_names_file_and_line() {
    match check_dir(&fixture("parse-error"), &AllowedRegions::default()) {
        Err(CheckError::Parse {
            path,
            line,
            message,
        }) => {
            assert!(path.ends_with("parse-error/main.tf"), "{}", path.display());
            assert_eq!(line, 7, "{message}");
            let shown = CheckError::Parse {
                path,
                line,
                message,
            }
            .to_string();
            assert!(shown.contains("main.tf:7"), "{shown}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn missing_directory_is_an_io_error() {
    let err = check_dir(&fixture("no-such-case"), &AllowedRegions::default()).unwrap_err();
    assert!(matches!(err, CheckError::Io { .. }), "{err}");
}

#[test]
fn violation_display_is_file_line_rule() {
    let report = check("provider-region");
    let shown = report.violations[0].to_string();
    assert!(
        shown.starts_with("main.tf:2: [region-not-allowed] "),
        "{shown}"
    );
}

#[test]
fn real_terraform_tree_is_resident() {
    let dir = repo_root().join("terraform");
    let report = check_dir(&dir, &AllowedRegions::default()).expect("terraform/ parses");
    let shown: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    assert!(
        shown.is_empty(),
        "terraform/ breaks residency rules:\n{}",
        shown.join("\n")
    );
    // Six modules and the composition, four files each at least: the walk really read them.
    assert!(
        report.files_checked >= 24,
        "only {} .tf files checked",
        report.files_checked
    );
}
