//! Per-recording cache of the module name of every frame file, so that analyses that visit
//! every sample do the string work once per distinct file instead of once per sample.
//!
//! The cache lives in the recording's [`crate::recording::derived::Derived`] slots and fills
//! itself on first use. It only covers the strings present then; anything added later is
//! computed on each call instead. (The loop facts of stacks are cached the same way, next to
//! their type, by [`crate::analysis::loops::stack_facts`].)

use crate::recording::frames;
use crate::recording::{FrameDef, Recording};
use std::borrow::Cow;

/// [`frames::module`] of every string used as a frame's file, by string id ("" for others).
struct FileModules(Vec<String>);

/// The module of a frame's file ([`frames::module`]), computed once per file.
pub fn module_of<'r>(rec: &'r Recording, f: &FrameDef) -> Cow<'r, str> {
    let modules = &rec
        .derived
        .get_or_init(|| {
            let mut out = vec![String::new(); rec.strings.len()];
            for fr in &rec.frames {
                let slot = &mut out[fr.file as usize];
                if slot.is_empty() {
                    *slot = frames::module(rec.str(fr.file));
                }
            }
            FileModules(out)
        })
        .0;
    match modules.get(f.file as usize) {
        Some(m) if !m.is_empty() => Cow::Borrowed(m.as_str()),
        _ => Cow::Owned(frames::module(rec.str(f.file))),
    }
}
