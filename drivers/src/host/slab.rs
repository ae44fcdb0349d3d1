//! A vector with a free list and generations: names a socket or listener without aliasing a
//! recycled slot (Go: `pollDesc.fdseq`).

use alloc::vec::Vec;

/// A slab index plus generation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Id {
    pub(super) index: u32,
    pub(super) generation: u32,
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A vector with a free list; removing bumps the slot's generation.
pub(super) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub(super) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Occupied slots.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The index the next `insert` will use.
    pub(super) fn next_index(&self) -> u32 {
        self.free.last().copied().unwrap_or(self.slots.len() as u32)
    }

    pub(super) fn insert(&mut self, value: T) -> Id {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            debug_assert!(slot.value.is_none(), "slab: free slot {index} is occupied");
            slot.value = Some(value);
            Id {
                index,
                generation: slot.generation,
            }
        } else {
            let index = self.slots.len() as u32;
            self.slots.push(Slot {
                generation: 1,
                value: Some(value),
            });
            Id {
                index,
                generation: 1,
            }
        }
    }

    pub(super) fn get(&self, id: Id) -> Option<&T> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_mut()
    }

    pub(super) fn at(&self, index: u32) -> Option<&T> {
        self.slots.get(index as usize)?.value.as_ref()
    }

    pub(super) fn id_at(&self, index: u32) -> Option<Id> {
        let slot = self.slots.get(index as usize)?;
        slot.value.as_ref().map(|_| Id {
            index,
            generation: slot.generation,
        })
    }

    pub(super) fn at_mut(&mut self, index: u32) -> Option<(Id, &mut T)> {
        let slot = self.slots.get_mut(index as usize)?;
        let generation = slot.generation;
        slot.value.as_mut().map(|v| (Id { index, generation }, v))
    }

    pub(super) fn remove(&mut self, id: Id) -> Option<T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let value = slot.value.take()?;
        // Generation zero is never issued, so a zeroed id never names a live slot.
        slot.generation = slot.generation.wrapping_add(1).max(1);
        self.free.push(id.index);
        self.len -= 1;
        Some(value)
    }

    /// Every occupied slot.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.value.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_generations_never_alias() {
        let mut slab = Slab::new();
        let a = slab.insert(1);
        assert_eq!(slab.next_index(), 1);
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.remove(a), Some(1));
        assert_eq!(slab.len(), 0);
        assert_eq!(slab.next_index(), a.index, "the freed slot is reused");
        let b = slab.insert(2);
        assert_eq!(b.index, a.index);
        assert_ne!(b.generation, a.generation);
        assert_eq!(slab.get(a), None, "a stale id finds nothing");
        assert_eq!(slab.get(b), Some(&2));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.len(), 1, "a stale remove changes nothing");
        assert_eq!(slab.id_at(b.index), Some(b));
    }
}
