//! Property tests: the session lifecycle against a small model of SPEC §2, merge-patch
//! history that always rebuilds, and asset names that can never leave their directory.
//! Case counts: `PROPTEST_CASES` (default 256 per property).

use std::path::{Component, Path};

use lifeboat_core::{AssetName, CheckpointKind, NewCheckpoint};
use lifeboat_core::{
    Chain, Change, Delta, Error, Id, NewSession, Project, ProjectRules, RecoveryOption, SchemaRef,
    Session, Status, Timestamp, rebuild, save_project,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const T0: Timestamp = Timestamp(1_000_000);
const TIMEOUT_MS: u64 = 10_000;

/// One step of a worker's or an operator's life. `attempt_offset` picks the attempt the
/// request names: the current one (0), a stale one (-1) or a future one (+1).
#[derive(Debug, Clone)]
enum Step {
    Wait(u64),
    Heartbeat(i8),
    Checkpoint(i8),
    Pause(i8),
    Fail(i8),
    Recover { confirm: bool },
    Complete(Option<i8>),
    Cancel(Option<i8>),
}

fn step() -> impl Strategy<Value = Step> {
    let offset = prop_oneof![6 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)];
    prop_oneof![
        3 => (0..2 * TIMEOUT_MS).prop_map(Step::Wait),
        4 => offset.clone().prop_map(Step::Heartbeat),
        3 => offset.clone().prop_map(Step::Checkpoint),
        1 => offset.clone().prop_map(Step::Pause),
        1 => offset.clone().prop_map(Step::Fail),
        2 => any::<bool>().prop_map(|confirm| Step::Recover { confirm }),
        1 => proptest::option::of(offset.clone()).prop_map(Step::Complete),
        1 => proptest::option::of(offset).prop_map(Step::Cancel),
    ]
}

/// The model: SPEC §2's table and nothing else.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    status: Status,
    attempt: u32,
    lease_expires_at: Option<Timestamp>,
}

impl Model {
    fn observe(&mut self, now: Timestamp) {
        if self.status == Status::Active && self.lease_expires_at.is_some_and(|l| l <= now) {
            self.status = Status::Incomplete;
            self.lease_expires_at = None;
        }
    }

    /// The outcome SPEC §2 prescribes: `Some(next)` or `None` for a refusal.
    fn apply(&self, step: &Step, now: Timestamp) -> Option<Model> {
        let named = |offset: i8| self.attempt.checked_add_signed(i32::from(offset));
        let fenced = |offset: Option<i8>| offset.is_some_and(|o| named(o) != Some(self.attempt));
        let lease = Some(now.plus_ms(TIMEOUT_MS));
        let to = |status: Status, lease_expires_at: Option<Timestamp>| Model {
            status,
            attempt: self.attempt,
            lease_expires_at,
        };
        use Status::*;
        match (step, self.status) {
            (Step::Wait(_), _) => Some(self.clone()),
            (Step::Heartbeat(o) | Step::Checkpoint(o), Active) if !fenced(Some(*o)) => {
                Some(to(Active, lease))
            }
            (Step::Pause(o), Active) if !fenced(Some(*o)) => Some(to(Paused, None)),
            (Step::Fail(o), Active | Paused) if !fenced(Some(*o)) => Some(to(Failed, None)),
            (Step::Recover { confirm: true }, Incomplete | Failed | Paused) => Some(Model {
                status: Active,
                attempt: self.attempt + 1,
                lease_expires_at: lease,
            }),
            (Step::Complete(o), Active | Paused | Incomplete | Failed) if !fenced(*o) => {
                Some(to(Completed, None))
            }
            (Step::Cancel(o), Active | Paused | Incomplete | Failed) if !fenced(*o) => {
                Some(to(Cancelled, None))
            }
            _ => None,
        }
    }
}

fn apply(session: &mut Session, step: &Step, now: Timestamp) -> Result<(), Error> {
    let named = |offset: i8| {
        session
            .attempt
            .checked_add_signed(i32::from(offset))
            .unwrap_or(u32::MAX)
    };
    match step {
        Step::Wait(_) => Ok(()),
        Step::Heartbeat(o) => session.heartbeat(named(*o), None, None, now),
        Step::Checkpoint(o) => {
            let mut checkpoint = NewCheckpoint::new(CheckpointKind::Item);
            checkpoint.data = "{}".to_owned();
            session
                .checkpoint(named(*o), checkpoint, Vec::new(), now)
                .map(drop)
        }
        Step::Pause(o) => session.pause(Some(named(*o)), now),
        Step::Fail(o) => session
            .fail(named(*o), "boom".to_owned(), None, now)
            .map(drop),
        Step::Recover { confirm } => {
            let assessment = lifeboat_core::assess(
                session,
                &[],
                &|_| true,
                lifeboat_core::AssetCounts::default(),
            );
            session
                .recover(RecoveryOption::FreshStart, *confirm, &assessment, now)
                .map(drop)
        }
        Step::Complete(o) => session.complete(o.map(named), now),
        Step::Cancel(o) => session.cancel(o.map(named), now),
    }
}

fn seen(session: &Session) -> Model {
    Model {
        status: session.status,
        attempt: session.attempt,
        lease_expires_at: session.lease_expires_at,
    }
}

proptest! {
    /// Every step either does what the table says, or is refused and changes nothing the
    /// model tracks (status, attempt, lease).
    #[test]
    fn the_lifecycle_follows_the_table(steps in proptest::collection::vec(step(), 1..60)) {
        let new = NewSession {
            kind: "render".to_owned(),
            heartbeat_timeout_ms: Some(TIMEOUT_MS),
            max_attempts: Some(1_000),
            ..NewSession::default()
        };
        let mut session = Session::create(Id::parse("s").expect("id"), new, T0).expect("session");
        let mut model = seen(&session);
        let mut now = T0;
        for step in &steps {
            if let Step::Wait(ms) = step {
                now = now.plus_ms(*ms);
            }
            now = now.plus_ms(1);
            session.observe(now);
            model.observe(now);
            prop_assert_eq!(seen(&session), model.clone(), "before {:?}", step);
            let expected = model.apply(step, now);
            let outcome = apply(&mut session, step, now);
            match expected {
                Some(next) => {
                    prop_assert!(outcome.is_ok(), "{:?} from {:?}: {:?}", step, model, outcome);
                    model = next;
                }
                None => prop_assert!(outcome.is_err(), "{:?} from {:?} was allowed", step, model),
            }
            prop_assert_eq!(seen(&session), model.clone(), "after {:?}", step);
            prop_assert!(!(session.status.is_final() && session.lease_expires_at.is_some()));
        }
    }
}

/// Small JSON objects: the documents and patches of the history property.
fn json_object(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-1_000i64..1_000).prop_map(Value::from),
        "[a-z ]{0,12}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(depth, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-e]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    });
    proptest::collection::btree_map("[a-f]", value, 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

fn no_schema(_: &SchemaRef, _: &Value) -> Result<(), Error> {
    Ok(())
}

proptest! {
    /// Any sequence of merge patches: each save equals RFC 7396 applied to the previous
    /// state, and the stored deltas (with snapshots where the policy takes them) rebuild
    /// every revision exactly.
    #[test]
    fn merge_patch_history_rebuilds_every_revision(
        first in json_object(2),
        patches in proptest::collection::vec(json_object(2), 1..25),
    ) {
        let id = Id::parse("doc").expect("id");
        let rules = ProjectRules::default();
        let mut chain = Chain::default();
        let first = save_project(None, &id, Change::Replace { state: first, title: None, schema: None },
            &rules, chain, T0, &no_schema).expect("first save");
        let mut project: Project = first.project;
        let mut deltas = vec![first.delta];
        let mut states = vec![project.state.clone()];
        for patch in patches {
            let mut expected = project.state.clone();
            json_patch::merge(&mut expected, &patch);
            let saved = save_project(Some(&project), &id, Change::Merge(patch), &rules, chain, T0, &no_schema)
                .expect("merge save");
            prop_assert_eq!(&saved.project.state, &expected);
            chain = match &saved.delta {
                Delta::Snapshot(_) => Chain::default(),
                _ => Chain { deltas: chain.deltas + 1, delta_bytes: chain.delta_bytes },
            };
            project = saved.project;
            deltas.push(saved.delta);
            states.push(project.state.clone());
        }
        for (revision, state) in states.iter().enumerate() {
            let base = deltas[..=revision]
                .iter()
                .rposition(|d| matches!(d, Delta::Snapshot(_)))
                .expect("revision 1 is a snapshot");
            let Delta::Snapshot(snapshot) = deltas[base].clone() else { unreachable!() };
            let rebuilt = rebuild(snapshot, deltas[base + 1..=revision].iter().cloned())
                .expect("rebuilds");
            prop_assert_eq!(&rebuilt, state, "revision {}", revision + 1);
        }
    }
}

proptest! {
    /// Whatever the input, an accepted name is relative, has no `.`/`..`/empty
    /// segment, round-trips, and joined to a directory stays inside it.
    #[test]
    fn asset_names_never_leave_their_directory(raw in "([a-zA-Z0-9._/\\\\-]|\\.\\.|%2e|\u{0}|/){0,40}") {
        if let Ok(name) = AssetName::parse(&raw) {
            prop_assert_eq!(name.as_str(), raw.as_str());
            prop_assert_eq!(AssetName::parse(name.as_str()).ok(), Some(name.clone()));
            let base = Path::new("/data/blobs/owner");
            let joined = base.join(name.as_str());
            prop_assert!(joined.starts_with(base));
            for component in Path::new(name.as_str()).components() {
                prop_assert!(matches!(component, Component::Normal(_)), "{:?} in {:?}", component, raw);
            }
            let forbidden = raw.contains('\\') || raw.contains('\0');
            prop_assert!(!forbidden, "a backslash or NUL was accepted");
        }
    }

    /// Arbitrary Unicode never panics the parser, and anything it accepts is ASCII.
    #[test]
    fn asset_name_parsing_never_panics(raw in "\\PC{0,600}") {
        if let Ok(name) = AssetName::parse(&raw) {
            prop_assert!(name.as_str().is_ascii() && name.as_str().len() <= 512);
        }
    }
}

#[test]
fn a_known_traversal_is_refused() {
    for raw in [
        "../x",
        "a/../b",
        "/etc/passwd",
        "a//b",
        "a/",
        ".",
        "a\\b",
        "",
    ] {
        assert!(AssetName::parse(raw).is_err(), "{raw:?}");
    }
}
