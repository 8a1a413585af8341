//! The entities a partition engine holds state for, each in a numbered slot.
//!
//! An event's entity is looked up by id once, whatever the number of views, and
//! everything else refers to it by its slot: timers, the lists of entities changed since
//! the last drains. Before, each view looked the id up again, every timer and list entry
//! held a copy of the id, and a fired timer looked its entity up by id.
//!
//! A slot is freed when no view holds state for its entity, and may then be given to
//! another entity. A timer set for the old one may still name the slot: it acts only when
//! the state there needs a timer at that very moment (see `fire_timers`), when the new
//! entity has set that same timer itself.

use super::{EntityId, EntityState, FastMap};

pub(super) type Slot = u32;

pub(super) struct EntityTable {
    slots: FastMap<EntityId, Slot>,
    /// By slot: the entity's id (empty while the slot is free).
    ids: Vec<EntityId>,
    /// Per view, by slot: the entity's state in the view.
    states: Vec<Vec<Option<EntityState>>>,
    free: Vec<Slot>,
    /// Per view: how many entities it holds state for.
    counts: Vec<usize>,
}

impl EntityTable {
    pub fn new(views: usize) -> Self {
        Self {
            slots: FastMap::default(),
            ids: Vec::new(),
            states: (0..views).map(|_| Vec::new()).collect(),
            free: Vec::new(),
            counts: vec![0; views],
        }
    }

    /// The slot of `entity`, which gets one when it has none.
    pub fn slot_of(&mut self, entity: &EntityId) -> Slot {
        let (ids, states, free) = (&mut self.ids, &mut self.states, &mut self.free);
        *self.slots.entry_ref(entity).or_insert_with(|| {
            if let Some(slot) = free.pop() {
                ids[slot as usize] = entity.clone();
                return slot;
            }
            ids.push(entity.clone());
            for view in states.iter_mut() {
                view.push(None);
            }
            Slot::try_from(ids.len() - 1).expect("fewer than 2^32 entities in a partition")
        })
    }

    /// The slot of `entity`, when it has one.
    pub fn find(&self, entity: &str) -> Option<Slot> {
        self.slots.get(entity).copied()
    }

    /// The id of the entity in `slot`.
    pub fn id(&self, slot: Slot) -> &EntityId {
        &self.ids[slot as usize]
    }

    pub fn get(&self, view: usize, slot: Slot) -> Option<&EntityState> {
        self.states[view][slot as usize].as_ref()
    }

    pub fn get_mut(&mut self, view: usize, slot: Slot) -> Option<&mut EntityState> {
        self.states[view][slot as usize].as_mut()
    }

    /// The state of the entity in `slot` in `view`, made by `new` when there is none.
    pub fn get_or_insert_with(
        &mut self,
        view: usize,
        slot: Slot,
        new: impl FnOnce() -> EntityState,
    ) -> &mut EntityState {
        let state = &mut self.states[view][slot as usize];
        if state.is_none() {
            self.counts[view] += 1;
        }
        state.get_or_insert_with(new)
    }

    /// Sets the state of the entity in `slot` in `view`.
    pub fn insert(&mut self, view: usize, slot: Slot, state: EntityState) {
        if self.states[view][slot as usize].replace(state).is_none() {
            self.counts[view] += 1;
        }
    }

    /// Removes the entity's state in `view`; its slot is freed once no view holds state
    /// for it.
    pub fn remove(&mut self, view: usize, slot: Slot) {
        let at = slot as usize;
        if self.states[view][at].take().is_none() {
            return;
        }
        self.counts[view] -= 1;
        if self.states.iter().all(|states| states[at].is_none()) {
            let id = std::mem::take(&mut self.ids[at]);
            self.slots.remove(&id);
            self.free.push(slot);
        }
    }

    /// The entities `view` holds state for, with their slots.
    pub fn iter(&self, view: usize) -> impl Iterator<Item = (Slot, &EntityId, &EntityState)> {
        self.states[view]
            .iter()
            .zip(&self.ids)
            .enumerate()
            .filter_map(|(slot, (state, id))| Some((slot as Slot, id, state.as_ref()?)))
    }

    /// How many (view, entity) states there are.
    pub fn len(&self) -> usize {
        self.counts.iter().sum()
    }
}
