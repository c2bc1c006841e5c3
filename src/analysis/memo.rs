//! Per-recording caches of pure functions of a recording's interned data (module names of
//! files, loop facts of stacks), so that analyses that visit every sample do the string work
//! once per distinct file or stack instead of once per sample.
//!
//! A [`Memo`] lives in [`Recording::memo`] and fills itself on first use. It only covers the
//! strings and stacks present then; anything added later is computed on each call instead.

use crate::analysis::{frames, loops};
use crate::recording::{FrameDef, Recording};
use std::borrow::Cow;
use std::sync::OnceLock;

/// Lazily computed facts about a recording's strings and stacks.
#[derive(Debug, Default, Clone)]
pub struct Memo {
    /// [`frames::module`] of every string used as a frame's file, by string id ("" for others).
    file_modules: OnceLock<Vec<String>>,
    /// [`loops::StackFacts`] of every stack, by stack id.
    stack_facts: OnceLock<Vec<loops::StackFacts>>,
}

/// The module of a frame's file ([`frames::module`]), computed once per file.
pub fn module_of<'r>(rec: &'r Recording, f: &FrameDef) -> Cow<'r, str> {
    let modules = rec.memo.file_modules.get_or_init(|| {
        let mut out = vec![String::new(); rec.strings.len()];
        for fr in &rec.frames {
            let slot = &mut out[fr.file as usize];
            if slot.is_empty() {
                *slot = frames::module(rec.str(fr.file));
            }
        }
        out
    });
    match modules.get(f.file as usize) {
        Some(m) if !m.is_empty() => Cow::Borrowed(m.as_str()),
        _ => Cow::Owned(frames::module(rec.str(f.file))),
    }
}

/// The loop facts of a stack ([`loops::StackFacts`]), computed once per stack.
pub fn stack_facts(rec: &Recording, stack: u32) -> Cow<'_, loops::StackFacts> {
    let facts = rec.memo.stack_facts.get_or_init(|| {
        (0..rec.stacks.len() as u32)
            .map(|id| loops::StackFacts::of(rec, id))
            .collect()
    });
    match facts.get(stack as usize) {
        Some(f) => Cow::Borrowed(f),
        None => Cow::Owned(loops::StackFacts::of(rec, stack)),
    }
}
