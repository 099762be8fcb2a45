//! Audit events on S3 are written under Object Lock (compliance mode) when
//! `FALAJ_AUDIT_RETENTION_DAYS` is set, as the registry bucket policy in `terraform/` demands;
//! other objects are not locked. Its own test binary, because it sets the variable.

mod support;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration, ObjectLockMode};
use falaj::store::{self, OpenOptions};
use falaj::{NewModel, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_locked_and_other_objects_are_not() {
    let endpoint = support::s3_endpoint();
    // SAFETY: the only test in this binary; set before any store reads it.
    unsafe { std::env::set_var("FALAJ_AUDIT_RETENTION_DAYS", "400") };
    let client = support::s3_client("me-central-1");
    let bucket = format!("falaj-lock-{:016x}", rand::random::<u64>());
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from("me-central-1"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let opts = OpenOptions {
        endpoint: Some(endpoint.clone()),
        ..Default::default()
    };
    let reg = Registry::new(
        store::open(&format!("s3://{bucket}/reg"), &opts)
            .await
            .unwrap(),
    );
    reg.create_model(
        NewModel {
            name: "locked".into(),
            ..Default::default()
        },
        "ann",
    )
    .await
    .unwrap();

    let mut keys = store::list_all(reg.store().as_ref(), "audit/locked/")
        .await
        .unwrap();
    // The event and the chain's head, both under the lock.
    assert_eq!(
        keys,
        vec![
            "audit/locked/000000000001.json".to_string(),
            "audit/locked/head.json".to_string()
        ]
    );
    keys.truncate(1);
    // HeadObject carries the lock (moto answers GetObjectRetention with the object itself).
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(format!("reg/{}", keys[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(head.object_lock_mode, Some(ObjectLockMode::Compliance));
    let until = head
        .object_lock_retain_until_date
        .expect("a retain-until date")
        .secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = (until - now) as f64 / 86_400.0;
    assert!((399.0..=400.5).contains(&days), "retained {days} days");
    // The model record is not locked (it is updated by compare-and-swap).
    let m = client
        .head_object()
        .bucket(&bucket)
        .key("reg/models/locked/model.json")
        .send()
        .await
        .unwrap();
    assert_eq!(m.object_lock_mode, None, "only audit/ is locked");

    // A bad setting is refused at open, before any write.
    unsafe { std::env::set_var("FALAJ_AUDIT_RETENTION_DAYS", "forever") };
    let Err(err) = store::open(&format!("s3://{bucket}/reg"), &opts).await else {
        panic!("a bad FALAJ_AUDIT_RETENTION_DAYS must be refused");
    };
    assert!(
        err.to_string().contains("FALAJ_AUDIT_RETENTION_DAYS"),
        "{err}"
    );
}
