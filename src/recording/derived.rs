//! A place on a [`super::Recording`] where later stages cache what they derive from it (the
//! analysis's module names per file and loop facts per stack), without the recording knowing
//! their types: the recording stage stays below the analysis.
//!
//! Each cached value is keyed by its type and computed once, on first use; it is never written
//! to a file. A handful of slots is enough: each stage keeps its caches in one struct.

use std::any::{Any, TypeId};
use std::sync::{Mutex, OnceLock};

/// How many distinct cache types one recording can hold.
const SLOTS: usize = 4;

/// Values derived from a recording, one per type, each computed once.
#[derive(Default)]
pub struct Derived {
    /// Which type owns each slot. Claimed under the lock, filled outside it, so that computing
    /// one cache may use another (the loop facts of stacks use the module names of files).
    owners: Mutex<[Option<TypeId>; SLOTS]>,
    slots: [OnceLock<Box<dyn Any + Send + Sync>>; SLOTS],
}

impl Derived {
    /// The cached `T`, computed with `init` on first use.
    ///
    /// # Panics
    /// When more than [`SLOTS`] types are cached on one recording, or when `init` asks for
    /// the `T` it is computing (programming errors).
    pub fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> &T {
        // Fast path, no lock: a slot already filled with a `T` (analyses ask per frame).
        for slot in &self.slots {
            if let Some(v) = slot.get().and_then(|v| v.downcast_ref::<T>()) {
                return v;
            }
        }
        let id = TypeId::of::<T>();
        let slot = {
            let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
            match owners.iter().position(|o| *o == Some(id)) {
                Some(i) => i,
                None => {
                    let i = owners
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or_else(|| panic!("more than {SLOTS} derived caches"));
                    owners[i] = Some(id);
                    i
                }
            }
        };
        self.slots[slot]
            .get_or_init(|| Box::new(init()))
            .downcast_ref::<T>()
            .expect("a slot holds the type that claimed it")
    }
}

impl Clone for Derived {
    /// A clone starts empty: the caches are recomputed for the copy.
    fn clone(&self) -> Self {
        Derived::default()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.slots.iter().filter(|s| s.get().is_some()).count();
        write!(f, "Derived({used} of {SLOTS} caches)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_type_computed_once() {
        let d = Derived::default();
        let mut calls = 0;
        assert_eq!(
            *d.get_or_init(|| {
                calls += 1;
                7u32
            }),
            7
        );
        assert_eq!(*d.get_or_init(|| 9u32), 7, "cached");
        assert_eq!(d.get_or_init(|| "s".to_owned()), "s");
        assert_eq!(*d.get_or_init(|| 1u64), 1);
        assert_eq!(*d.get_or_init(|| 8u32), 7);
        assert_eq!(calls, 1);
    }

    #[test]
    fn one_cache_may_be_computed_from_another() {
        let d = Derived::default();
        let outer = d.get_or_init(|| *d.get_or_init(|| 3u8) as u16 * 2);
        assert_eq!(*outer, 6);
    }
}
