//! The promotion state machine, roles and approval rules, as pure functions.
//!
//! A version moves `registered → validated | rejected → staging → production → archived`.
//! Its state is derived, not stored: from its latest gate report, the aliases pointing at it
//! and whether it was ever replaced at production. So there is no state record to diverge
//! from the aliases, and the `falaj` crate only has to gather those facts and ask here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Lifecycle state of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Registered, not validated yet.
    Registered,
    /// Latest gate report passed.
    Validated,
    /// Latest gate report failed (or the model did not load).
    Rejected,
    /// At the `staging` alias.
    Staging,
    /// At the `production` alias.
    Production,
    /// Was at production and was replaced.
    Archived,
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Registered => "registered",
            Self::Validated => "validated",
            Self::Rejected => "rejected",
            Self::Staging => "staging",
            Self::Production => "production",
            Self::Archived => "archived",
        })
    }
}

/// The facts a version's state is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VersionFacts {
    /// Outcome of the latest gate report, `None` if never validated.
    pub gates_passed: Option<bool>,
    /// `staging` points at it.
    pub at_staging: bool,
    /// `production` points at it.
    pub at_production: bool,
    /// It was replaced at production at some point.
    pub was_replaced: bool,
}

/// Derives the state: production wins over staging, over archived, over the gate outcome.
pub fn state_of(f: VersionFacts) -> VersionState {
    match f {
        VersionFacts {
            at_production: true,
            ..
        } => VersionState::Production,
        VersionFacts {
            at_staging: true, ..
        } => VersionState::Staging,
        VersionFacts {
            was_replaced: true, ..
        } => VersionState::Archived,
        VersionFacts {
            gates_passed: Some(false),
            ..
        } => VersionState::Rejected,
        VersionFacts {
            gates_passed: Some(true),
            ..
        } => VersionState::Validated,
        _ => VersionState::Registered,
    }
}

/// Where a version can be promoted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The `staging` alias and `staging` environment.
    Staging,
    /// The `production` alias and `prod` environment.
    Production,
}

impl Stage {
    /// The alias the stage moves.
    pub fn alias(self) -> &'static str {
        match self {
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }

    /// The deployment environment of the stage.
    pub fn env(self) -> &'static str {
        match self {
            Self::Staging => "staging",
            Self::Production => "prod",
        }
    }

    /// Parses `staging` or `production`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "staging" => Some(Self::Staging),
            "production" | "prod" => Some(Self::Production),
            _ => None,
        }
    }

    /// The stage of a deployment environment (`prod`/`production`, `staging`).
    pub fn for_env(env: &str) -> Option<Self> {
        Self::parse(env)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alias())
    }
}

/// Aliases that only promotion moves: `staging` and `production` (gates and approvals) and
/// `challenger` (a running canary). Returns the command to use instead, for an error message;
/// `None` for an alias anyone with write access may move (`champion`, user aliases).
pub fn managed_alias(alias: &str) -> Option<&'static str> {
    match alias {
        "staging" => Some("falaj promote MODEL@N --to staging"),
        "production" => Some("falaj promote MODEL@N --to production (after two approvals)"),
        "challenger" => {
            Some("falaj promote MODEL@N --to production --canary W, then falaj rollout / rollback")
        }
        _ => None,
    }
}

/// A role an identity can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads everything, writes nothing.
    Viewer,
    /// Registers and validates versions.
    DataScientist,
    /// Validates, sets gate policies, promotes, rolls out and back.
    MlEngineer,
    /// Approves versions for production.
    Approver,
    /// Everything, including granting roles.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Self::Viewer,
        Self::DataScientist,
        Self::MlEngineer,
        Self::Approver,
        Self::Admin,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::DataScientist => "data-scientist",
            Self::MlEngineer => "ml-engineer",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A write that needs a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Register a version.
    Register,
    /// Run the gates and write a report.
    Validate,
    /// Attach a gate policy to a model.
    SetPolicy,
    /// Approve a version.
    Approve,
    /// Promote to staging.
    PromoteStaging,
    /// Promote to production.
    PromoteProduction,
    /// Change canary weights.
    Rollout,
    /// Roll a deployment back.
    Rollback,
    /// Grant roles.
    GrantRoles,
    /// Re-sign a deployment that lags its aliases (`falaj deployments --repair`).
    Repair,
}

impl Action {
    /// The roles allowed to do it (admin always is).
    pub fn allowed_roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Self::Register => &[DataScientist, MlEngineer, Admin],
            Self::Validate => &[DataScientist, MlEngineer, Admin],
            Self::SetPolicy => &[MlEngineer, Admin],
            Self::Approve => &[Approver, Admin],
            Self::PromoteStaging => &[MlEngineer, Admin],
            Self::PromoteProduction | Self::Rollout | Self::Rollback => &[MlEngineer, Admin],
            Self::GrantRoles | Self::Repair => &[Admin],
        }
    }

    /// A short name for messages and audit events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Validate => "validate",
            Self::SetPolicy => "set a gate policy",
            Self::Approve => "approve",
            Self::PromoteStaging => "promote to staging",
            Self::PromoteProduction => "promote to production",
            Self::Rollout => "roll out",
            Self::Rollback => "roll back",
            Self::GrantRoles => "grant roles",
            Self::Repair => "repair deployments",
        }
    }
}

/// `roles.json` at the store root: who holds which roles.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoleBindings {
    /// Identity → roles.
    pub bindings: BTreeMap<String, Vec<Role>>,
    /// Verified principal (an AWS ARN as STS `GetCallerIdentity` returns it) → the identity
    /// it acts as. On an `s3://` store a caller whose ARN is not here has no identity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub principals: BTreeMap<String, String>,
}

impl RoleBindings {
    /// Roles of `who` (none if unknown).
    pub fn roles_of(&self, who: &str) -> &[Role] {
        self.bindings.get(who).map_or(&[], Vec::as_slice)
    }

    /// Whether `who` holds `role`.
    pub fn has(&self, who: &str, role: Role) -> bool {
        self.roles_of(who).contains(&role)
    }

    /// Whether `who` may do `action`.
    pub fn allows(&self, who: &str, action: Action) -> bool {
        self.roles_of(who)
            .iter()
            .any(|r| action.allowed_roles().contains(r))
    }

    /// Adds `role` to `who` (idempotent).
    pub fn grant(&mut self, who: &str, role: Role) {
        let roles = self.bindings.entry(who.to_string()).or_default();
        if !roles.contains(&role) {
            roles.push(role);
            roles.sort();
        }
    }

    /// The identity a verified principal acts as, if an admin mapped it.
    pub fn identity_of(&self, principal: &str) -> Option<&str> {
        self.principals.get(principal).map(String::as_str)
    }

    /// Removes `role` from `who`.
    pub fn revoke(&mut self, who: &str, role: Role) {
        if let Some(roles) = self.bindings.get_mut(who) {
            roles.retain(|r| *r != role);
            if roles.is_empty() {
                self.bindings.remove(who);
            }
        }
    }
}

/// An identity (CLI `--as`, webhook subject) that can name an approval key: 1-128 chars
/// of letters, digits and `._@+-`, not starting with `.`.
pub fn validate_identity(who: &str) -> Result<(), Refusal> {
    let ok = !who.is_empty()
        && who.len() <= 128
        && !who.starts_with('.')
        && who
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Refusal::BadIdentity { who: who.into() })
    }
}

/// Who makes a call: the identity roles are checked on, and the principal that proved it.
///
/// The principal is what an outside authority vouches for: an AWS ARN from STS, a CI
/// token's issuer and subject, a webhook credential. On a `dir://` store nothing vouches, so
/// the principal is the identity itself and `verified` is false. Four-eyes compares
/// principals as well as identities, so one person acting under two names (an admin's
/// `--as`) still counts once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The falaj identity (`roles.json` key).
    pub identity: String,
    /// Who proved it.
    pub principal: String,
    /// Whether an outside authority vouched for `principal`.
    pub verified: bool,
}

impl Actor {
    /// An identity nobody vouched for (its own principal).
    pub fn unverified(identity: impl Into<String>) -> Self {
        let identity = identity.into();
        Self {
            principal: identity.clone(),
            identity,
            verified: false,
        }
    }

    /// An identity proved by `principal`.
    pub fn verified(identity: impl Into<String>, principal: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            principal: principal.into(),
            verified: true,
        }
    }
}

impl From<&str> for Actor {
    fn from(identity: &str) -> Self {
        Self::unverified(identity)
    }
}

impl From<&Actor> for Actor {
    fn from(actor: &Actor) -> Self {
        actor.clone()
    }
}

/// `models/<m>/approvals/<n>/<who>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Stage approved for.
    pub stage: Stage,
    /// Approver.
    pub by: String,
    /// The approver's principal (absent in approvals made before principals were recorded:
    /// then `by` stands for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// RFC 3339.
    pub at: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Seq of the audit event that recorded it (its intent is written first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_seq: Option<u64>,
}

impl Approval {
    /// The principal that approved (`by` for approvals made before principals were recorded).
    pub fn principal(&self) -> &str {
        self.principal.as_deref().unwrap_or(&self.by)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The validate function may stage a version only when the policy asks for it.
    #[error(
        "{VALIDATOR} promotes {model} to staging only when its gate policy says `[promotion] auto_staging = true`"
    )]
    NoAutoStaging {
        /// Model.
        model: String,
    },
    /// The identity lacks a role for the action.
    #[error(
        "{who} may not {action}: it needs one of the roles {needed} (holds: {held}); ask an admin to run `falaj roles grant {who} <role>`"
    )]
    Forbidden {
        /// Identity.
        who: String,
        /// Action name.
        action: String,
        /// Roles that would do.
        needed: String,
        /// Roles held.
        held: String,
    },
    /// The identity string is unusable.
    #[error(
        "identity {who:?} is invalid: use 1-128 letters, digits or ._@+- (set it with --as or FALAJ_IDENTITY)"
    )]
    BadIdentity {
        /// As given.
        who: String,
    },
    /// The version's state does not allow the transition.
    #[error("{subject} is {state}; it cannot go to {to}: {hint}")]
    State {
        /// `model@n`.
        subject: String,
        /// Current state.
        state: VersionState,
        /// Target.
        to: String,
        /// How to get there.
        hint: String,
    },
    /// An author approving their own version, under their own name or another.
    #[error(
        "{subject} was registered by {author} (principal {principal}), who cannot approve it under any name (here as {who}); another approver must"
    )]
    SelfApproval {
        /// The identity approving.
        who: String,
        /// The version's author.
        author: String,
        /// The principal that registered it.
        principal: String,
        /// `model@n`.
        subject: String,
    },
    /// A principal that already approved, approving again under another name.
    #[error(
        "principal {principal} already approved {subject} as {by}; four-eyes needs another person, not another name"
    )]
    SamePrincipal {
        /// The principal.
        principal: String,
        /// The identity it approved as first.
        by: String,
        /// `model@n`.
        subject: String,
    },
    /// Not enough approvals for production.
    #[error(
        "{subject} has {have} of {need} approvals for production (from approvers other than the author {author}); run `falaj approve {subject} --to production` as an approver"
    )]
    NeedsApprovals {
        /// `model@n`.
        subject: String,
        /// Valid approvals.
        have: u32,
        /// Needed.
        need: u32,
        /// Version author.
        author: String,
    },
    /// An approver rejected the version for this stage: a veto that stands for that version.
    #[error(
        "{subject} was rejected for {to} by {by} ({comment}); a rejection stands for the version: fix what it says and register a new version"
    )]
    Rejected {
        /// `model@n`.
        subject: String,
        /// Target.
        to: String,
        /// The approver who rejected it.
        by: String,
        /// Their reason, as given (or "no reason given").
        comment: String,
    },
    /// A deployment asking to run the graph in the edge host's native tract for a version
    /// whose policy does not allow it.
    #[error(
        "{subject} may not run in the edge host's native runtime: its gate policy does not say `[edge] allow_host_runtime = true`; promote it without --runtime host (the sandbox), or attach a policy that allows it (`falaj policy set`) and validate again"
    )]
    HostRuntime {
        /// `model@n`.
        subject: String,
    },
    /// The gate evidence does not count for the version (advisory, another policy, another
    /// holdout, or a holdout changed since).
    #[error("{subject} cannot go to {to}: {reason}")]
    Evidence {
        /// `model@n`.
        subject: String,
        /// Target.
        to: String,
        /// Why, and what to run.
        reason: String,
    },
    /// A state object that no audited move explains (a hand edit, or a forged write): nothing
    /// is signed from it.
    #[error(
        "{key}: {reason}; no audited move explains it, so nothing is signed from it. Run `falaj audit {model} --verify`, and restore the object from its last audited value"
    )]
    Unexplained {
        /// Model.
        model: String,
        /// Store key of the object.
        key: String,
        /// What disagrees.
        reason: String,
    },
}

/// The validate function's own identity. It holds no role in `roles.json`; it may run the
/// gates, and promote to staging, which the caller allows only when the model's policy (set by
/// an ml-engineer) says `auto_staging = true`. Nothing else: never approvals or production.
pub const VALIDATOR: &str = "falaj-validate";

/// Checks that `who` may do `action`.
pub fn authorize(roles: &RoleBindings, who: &str, action: Action) -> Result<(), Refusal> {
    validate_identity(who)?;
    if roles.allows(who, action)
        || (who == VALIDATOR && matches!(action, Action::Validate | Action::PromoteStaging))
    {
        return Ok(());
    }
    let list = |rs: &[Role]| {
        if rs.is_empty() {
            "none".to_string()
        } else {
            rs.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
        }
    };
    Err(Refusal::Forbidden {
        who: who.into(),
        action: action.name().into(),
        needed: list(action.allowed_roles()),
        held: list(roles.roles_of(who)),
    })
}

/// Checks that `who` may approve version `subject` in `state`: not its author, by identity
/// or by principal (`author_principal`, absent for versions registered before principals
/// were recorded), and not a principal that already approved it under another name.
pub fn check_approval(
    subject: &str,
    state: VersionState,
    (author, author_principal): (&str, Option<&str>),
    who: &Actor,
    approvals: &[Approval],
) -> Result<(), Refusal> {
    let author_principal = author_principal.unwrap_or(author);
    if who.identity == author || who.principal == author_principal {
        return Err(Refusal::SelfApproval {
            who: who.identity.clone(),
            author: author.into(),
            principal: author_principal.into(),
            subject: subject.into(),
        });
    }
    if let Some(a) = approvals
        .iter()
        .find(|a| a.principal() == who.principal && a.by != who.identity)
    {
        return Err(Refusal::SamePrincipal {
            principal: who.principal.clone(),
            by: a.by.clone(),
            subject: subject.into(),
        });
    }
    match state {
        VersionState::Validated | VersionState::Staging => Ok(()),
        s => Err(Refusal::State {
            subject: subject.into(),
            state: s,
            to: "approved".into(),
            hint: match s {
                VersionState::Registered => {
                    format!("validate it first with `falaj validate {subject} --data holdout.csv`")
                }
                VersionState::Rejected => {
                    "its gates failed; fix the model and register a new version".into()
                }
                VersionState::Production => "it is already in production".into(),
                _ => "archived versions are not approved again; roll back instead".into(),
            },
        }),
    }
}

/// Approvals that count: for `stage`, by a current approver (or admin), not the author
/// (by identity or principal); one per principal, so two names of one person count once.
pub fn valid_approvals(
    approvals: &[Approval],
    roles: &RoleBindings,
    (author, author_principal): (&str, Option<&str>),
    stage: Stage,
) -> u32 {
    let author_principal = author_principal.unwrap_or(author);
    let mut who: Vec<&str> = approvals
        .iter()
        .filter(|a| a.stage == stage && a.by != author && a.principal() != author_principal)
        .filter(|a| roles.has(&a.by, Role::Approver) || roles.has(&a.by, Role::Admin))
        .map(Approval::principal)
        .collect();
    who.sort_unstable();
    who.dedup();
    who.len() as u32
}

/// Checks that a version in `state` may be promoted to `to`; `approvals` are the valid ones.
pub fn check_promotion(
    subject: &str,
    state: VersionState,
    to: Stage,
    approvals: u32,
    needed: u32,
    author: &str,
) -> Result<(), Refusal> {
    let refuse = |hint: String| Refusal::State {
        subject: subject.into(),
        state,
        to: to.to_string(),
        hint,
    };
    match (state, to) {
        (VersionState::Registered, _) => Err(refuse(format!(
            "validate it first with `falaj validate {subject} --data holdout.csv`"
        ))),
        (VersionState::Rejected, _) => Err(refuse(
            "its gates failed; see `falaj show` for the report".into(),
        )),
        (VersionState::Staging, Stage::Staging) => Err(refuse("it is already there".into())),
        (VersionState::Production, _) => Err(refuse("it is already in production".into())),
        (VersionState::Archived, Stage::Staging) => Err(refuse(
            "it was replaced at production; use `falaj rollback` to bring it back".into(),
        )),
        (VersionState::Archived, Stage::Production) => Err(refuse(
            "it was replaced at production; use `falaj rollback` to bring it back".into(),
        )),
        (VersionState::Validated, Stage::Staging) => Ok(()),
        (VersionState::Validated | VersionState::Staging, Stage::Production) => {
            if approvals >= needed {
                Ok(())
            } else {
                Err(Refusal::NeedsApprovals {
                    subject: subject.into(),
                    have: approvals,
                    need: needed,
                    author: author.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> RoleBindings {
        let mut r = RoleBindings::default();
        r.grant("root", Role::Admin);
        r.grant("ann", Role::Approver);
        r.grant("bob", Role::Approver);
        r.grant("eve", Role::Viewer);
        r.grant("sam", Role::DataScientist);
        r.grant("mel", Role::MlEngineer);
        r
    }

    #[test]
    fn the_validator_may_only_validate_and_stage() {
        let r = RoleBindings::default();
        assert!(authorize(&r, VALIDATOR, Action::Validate).is_ok());
        assert!(authorize(&r, VALIDATOR, Action::PromoteStaging).is_ok());
        for a in [
            Action::Approve,
            Action::PromoteProduction,
            Action::Rollout,
            Action::Rollback,
            Action::GrantRoles,
            Action::SetPolicy,
        ] {
            assert!(authorize(&r, VALIDATOR, a).is_err(), "{a:?}");
        }
    }

    #[test]
    fn promotion_aliases_are_managed_and_others_are_free() {
        for a in ["staging", "production", "challenger"] {
            assert!(managed_alias(a).is_some(), "{a}");
        }
        for a in ["champion", "latest", "prod", "Production"] {
            assert!(managed_alias(a).is_none(), "{a}");
        }
    }

    #[test]
    fn states_are_derived_with_precedence() {
        let f = VersionFacts::default();
        assert_eq!(state_of(f), VersionState::Registered);
        let passed = VersionFacts {
            gates_passed: Some(true),
            ..f
        };
        assert_eq!(state_of(passed), VersionState::Validated);
        assert_eq!(
            state_of(VersionFacts {
                gates_passed: Some(false),
                ..f
            }),
            VersionState::Rejected
        );
        let staged = VersionFacts {
            at_staging: true,
            ..passed
        };
        assert_eq!(state_of(staged), VersionState::Staging);
        let prod = VersionFacts {
            at_production: true,
            was_replaced: true,
            ..staged
        };
        assert_eq!(state_of(prod), VersionState::Production);
        let archived = VersionFacts {
            was_replaced: true,
            ..passed
        };
        assert_eq!(state_of(archived), VersionState::Archived);
    }

    #[test]
    fn roles_gate_actions() {
        let r = roles();
        assert!(authorize(&r, "root", Action::GrantRoles).is_ok());
        assert!(authorize(&r, "mel", Action::PromoteProduction).is_ok());
        let e = authorize(&r, "eve", Action::PromoteStaging).unwrap_err();
        assert!(e.to_string().contains("viewer"), "{e}");
        assert!(authorize(&r, "sam", Action::Validate).is_ok());
        assert!(authorize(&r, "sam", Action::Approve).is_err());
        assert!(authorize(&r, "nobody", Action::Validate).is_err());
        assert!(matches!(
            authorize(&r, "../x", Action::Validate),
            Err(Refusal::BadIdentity { .. })
        ));
        assert_eq!(Role::parse("ml-engineer"), Some(Role::MlEngineer));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"data-scientist\""), "{json}");
    }

    #[test]
    fn approvals_rules() {
        let r = roles();
        let sam = ("sam", None);
        let check =
            |state, who: &Actor, list: &[Approval]| check_approval("m@1", state, sam, who, list);
        assert!(matches!(
            check(VersionState::Validated, &"sam".into(), &[]),
            Err(Refusal::SelfApproval { .. })
        ));
        assert!(check(VersionState::Rejected, &"ann".into(), &[]).is_err());
        assert!(check(VersionState::Registered, &"ann".into(), &[]).is_err());
        assert!(check(VersionState::Staging, &"ann".into(), &[]).is_ok());
        let ap = |by: &str, principal: Option<&str>| Approval {
            model: "m".into(),
            version: 1,
            stage: Stage::Production,
            by: by.into(),
            principal: principal.map(Into::into),
            at: String::new(),
            comment: String::new(),
            event_seq: None,
        };
        // The author's and a viewer's approvals don't count; duplicates count once.
        let list = vec![
            ap("ann", None),
            ap("ann", None),
            ap("sam", None),
            ap("eve", None),
            ap("bob", None),
        ];
        assert_eq!(valid_approvals(&list, &r, sam, Stage::Production), 2);
        assert_eq!(valid_approvals(&list, &r, sam, Stage::Staging), 0);
        assert_eq!(
            valid_approvals(&list, &r, ("bob", None), Stage::Production),
            1
        );

        // Principals: the author's principal under another name is the author; one
        // principal under two names counts once and is refused the second time.
        let arn = "arn:aws:sts::1:assumed-role/admin/root";
        let authored = ("sam", Some(arn));
        let root_as_ann = Actor::verified("ann", arn);
        assert!(matches!(
            check_approval("m@1", VersionState::Validated, authored, &root_as_ann, &[]),
            Err(Refusal::SelfApproval { .. })
        ));
        let two_names = vec![ap("ann", Some("p1")), ap("bob", Some("p1"))];
        assert_eq!(valid_approvals(&two_names, &r, sam, Stage::Production), 1);
        let bob_as_p1 = Actor::verified("bob", "p1");
        assert!(matches!(
            check(VersionState::Validated, &bob_as_p1, &two_names[..1]),
            Err(Refusal::SamePrincipal { .. })
        ));
        let by_author_principal = vec![ap("ann", Some(arn)), ap("bob", Some("p2"))];
        assert_eq!(
            valid_approvals(&by_author_principal, &r, authored, Stage::Production),
            1
        );
    }

    #[test]
    fn promotion_rules() {
        use VersionState::*;
        assert!(check_promotion("m@1", Validated, Stage::Staging, 0, 2, "a").is_ok());
        assert!(check_promotion("m@1", Registered, Stage::Staging, 0, 2, "a").is_err());
        assert!(check_promotion("m@1", Rejected, Stage::Staging, 5, 2, "a").is_err());
        let e = check_promotion("m@1", Staging, Stage::Production, 1, 2, "a").unwrap_err();
        assert!(matches!(
            e,
            Refusal::NeedsApprovals {
                have: 1,
                need: 2,
                ..
            }
        ));
        assert!(check_promotion("m@1", Staging, Stage::Production, 2, 2, "a").is_ok());
        assert!(check_promotion("m@1", Validated, Stage::Production, 2, 2, "a").is_ok());
        assert!(check_promotion("m@1", Production, Stage::Production, 2, 2, "a").is_err());
        assert!(check_promotion("m@1", Archived, Stage::Production, 2, 2, "a").is_err());
        assert_eq!(Stage::parse("production").unwrap().env(), "prod");
        assert_eq!(Stage::for_env("prod"), Some(Stage::Production));
    }
}
