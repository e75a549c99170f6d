//! Upload-time checks of a policy module: its sections (before wasmtime
//! validates it) and its ABI v1 exports (after).

use wasmparser::{Encoding, Parser, Payload};
use wasmtime::{ExternType, FuncType, Module, ValType};

use super::{MAX_MEMORY_BYTES, PolicyError, WASM_PAGE_BYTES};

/// Walks the module's sections with `wasmparser` (the parser wasmtime itself
/// uses; without validating: wasmtime validates the whole module next) for
/// imports, a start function and shared memories, so that these get their
/// own errors rather than a generic validation failure (shared memory does
/// not even validate with threads off).
pub(super) fn scan_sections(wasm: &[u8]) -> Result<(), PolicyError> {
    let malformed = |e: wasmparser::BinaryReaderError| PolicyError::Invalid(format!("malformed module: {e}"));
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(malformed)? {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => {
                return Err(PolicyError::Invalid(
                    "not a core module (components are not policies)".into(),
                ));
            }
            Payload::ImportSection(imports) if imports.count() != 0 => return Err(PolicyError::Imports),
            Payload::StartSection { .. } => return Err(PolicyError::StartFunction),
            Payload::MemorySection(memories) => {
                for memory in memories {
                    if memory.map_err(malformed)?.shared {
                        return Err(PolicyError::SharedMemory);
                    }
                }
            }
            // Function bodies are not read here (wasmtime validates them).
            _ => {}
        }
    }
    Ok(())
}

/// The ABI v1 exports, with their types. The marker first: a module without it
/// is not a v1 policy at all.
pub(super) fn check_exports(module: &Module) -> Result<(), PolicyError> {
    check_func(module, "keyward_policy_abi_v1", &[], &[])?;
    match module.get_export("memory") {
        None => return Err(PolicyError::MissingExport("memory")),
        Some(ExternType::Memory(memory)) => {
            if memory.is_shared() {
                return Err(PolicyError::SharedMemory);
            }
            if memory.is_64() || memory.page_size() != WASM_PAGE_BYTES {
                return Err(PolicyError::BadExportType("memory"));
            }
            let minimum = memory.minimum().saturating_mul(memory.page_size());
            if minimum > MAX_MEMORY_BYTES as u64 {
                return Err(PolicyError::Invalid(format!(
                    "memory minimum of {minimum} bytes exceeds the limit of {MAX_MEMORY_BYTES} bytes"
                )));
            }
        }
        Some(_) => return Err(PolicyError::BadExportType("memory")),
    }
    check_func(module, "keyward_alloc", &[Kind::I32], &[Kind::I32])?;
    check_func(module, "keyward_evaluate", &[Kind::I32, Kind::I32], &[Kind::I64])?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    I32,
    I64,
    Other,
}

fn kind(ty: ValType) -> Kind {
    match ty {
        ValType::I32 => Kind::I32,
        ValType::I64 => Kind::I64,
        _ => Kind::Other,
    }
}

fn check_func(module: &Module, name: &'static str, params: &[Kind], results: &[Kind]) -> Result<(), PolicyError> {
    let func: FuncType = match module.get_export(name) {
        None => return Err(PolicyError::MissingExport(name)),
        Some(ExternType::Func(func)) => func,
        Some(_) => return Err(PolicyError::BadExportType(name)),
    };
    let found_params: Vec<Kind> = func.params().map(kind).collect();
    let found_results: Vec<Kind> = func.results().map(kind).collect();
    if found_params != params || found_results != results {
        return Err(PolicyError::BadExportType(name));
    }
    Ok(())
}
