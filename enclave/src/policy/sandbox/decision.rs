//! How a decision ends: the policy's decision document, or the sandbox's
//! reason for denying (a [`Failure`]).

use std::fmt;

use serde::Deserialize;
use wasmtime::Trap;

use super::instance::StoreState;
use super::{
    Decision, EPOCH_TICK, Limits, MAX_CONTEXT_BYTES, MAX_DECISION_BYTES, MAX_MEMORY_BYTES, MAX_TABLE_ELEMENTS,
    SLOT_WAIT, error_text,
};

/// Why a decision was denied by the sandbox rather than by the policy.
#[derive(Debug)]
pub(super) enum Failure {
    ContextTooLarge,
    ContextNotUtf8,
    ForeignPolicy,
    Busy,
    Instantiate(String),
    OutOfFuel(u64),
    Deadline(u64),
    MemoryLimit,
    TableLimit,
    Trap(Trap),
    AllocOutOfBounds { ptr: u32, len: usize },
    DecisionTooLarge(u32),
    DecisionOutOfBounds { ptr: u32, len: u32 },
    Malformed(String),
    Engine(String),
}

impl Failure {
    pub(super) fn classify(error: &wasmtime::Error, state: &StoreState, limits: Limits) -> Failure {
        if state.limiter.memory_limit_hit {
            return Failure::MemoryLimit;
        }
        if state.limiter.table_limit_hit {
            return Failure::TableLimit;
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Failure::OutOfFuel(limits.fuel),
            Some(Trap::Interrupt) => Failure::Deadline(limits.deadline_ticks),
            Some(trap) => Failure::Trap(*trap),
            None => Failure::Engine(error_text(error)),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::ContextTooLarge => write!(f, "policy context is larger than {MAX_CONTEXT_BYTES} bytes"),
            Failure::ContextNotUtf8 => write!(f, "policy context is not UTF-8"),
            Failure::ForeignPolicy => write!(f, "policy module was compiled by another policy engine"),
            Failure::Busy => write!(f, "policy sandbox busy: no instance slot became free in {SLOT_WAIT:?}"),
            Failure::Instantiate(why) => write!(f, "policy instantiation failed: {why}"),
            Failure::OutOfFuel(fuel) => write!(f, "policy ran out of fuel ({fuel} units)"),
            Failure::Deadline(ticks) => write!(
                f,
                "policy exceeded its epoch deadline (wall-clock limit of {:?})",
                EPOCH_TICK.saturating_mul(u32::try_from(*ticks).unwrap_or(u32::MAX))
            ),
            Failure::MemoryLimit => write!(f, "policy exceeded the memory limit of {MAX_MEMORY_BYTES} bytes"),
            Failure::TableLimit => write!(f, "policy exceeded the table limit of {MAX_TABLE_ELEMENTS} elements"),
            Failure::Trap(Trap::StackOverflow) => write!(f, "policy trapped: call stack exhausted (stack overflow)"),
            Failure::Trap(Trap::MemoryOutOfBounds) => write!(f, "policy trapped: out of bounds memory access"),
            Failure::Trap(Trap::UnreachableCodeReached) => write!(f, "policy trapped: unreachable executed"),
            Failure::Trap(trap) => write!(f, "policy trapped: {trap}"),
            Failure::AllocOutOfBounds { ptr, len } => write!(
                f,
                "policy keyward_alloc returned an out of bounds buffer ({len} bytes at {ptr:#x})"
            ),
            Failure::DecisionTooLarge(len) => {
                write!(f, "policy decision is {len} bytes, more than {MAX_DECISION_BYTES}")
            }
            Failure::DecisionOutOfBounds { ptr, len } => {
                write!(f, "policy decision is out of bounds ({len} bytes at {ptr:#x})")
            }
            Failure::Malformed(why) => write!(f, "policy decision is malformed: {why}"),
            Failure::Engine(why) => write!(f, "policy sandbox error: {why}"),
        }
    }
}

/// The ABI v1 decision document.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecision {
    allow: bool,
    #[serde(default)]
    reason: String,
}

pub(super) fn parse_decision(bytes: &[u8]) -> Result<Decision, Failure> {
    // serde also reads structs from arrays (`[true, "…"]`); only an object is a decision.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Failure::Malformed("not a JSON object".into()));
    }
    let raw: RawDecision = serde_json::from_slice(bytes).map_err(|e| Failure::Malformed(e.to_string()))?;
    Ok(Decision {
        allow: raw.allow,
        reason: raw.reason,
    })
}
