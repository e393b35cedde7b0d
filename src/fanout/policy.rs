//! What a subscriber wants and what its full queue does: the fan-out's
//! vocabulary, also the configuration's (`config` names [`WhenFull`]).
//!
//! In: a subscriber's choice at subscribe time. Out: the admit decision per
//! update and the policy the queue applies. Bound: a [`Filter`] holds the
//! vehicle ids it was given, nothing more.

use serde::Deserialize;

use crate::fleet::Update;
use crate::topics::VehicleId;

/// What a full queue does. Who loses what is the point of each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Keep only the newest position and status per vehicle: the subscriber
    /// misses intermediate positions, never a vehicle's latest (unless more
    /// distinct vehicles are pending than its capacity: then the oldest
    /// pending one is dropped). Events are kept in order in their own queue
    /// of `fanout.events_queue`, oldest dropped first. Late positions are
    /// skipped: a live view wants the latest. The default for live views.
    Conflate,
    /// Drop the oldest queued update for the new one: the subscriber misses
    /// old updates.
    DropOldest,
    /// Drop the new update: the subscriber misses new updates until it has
    /// made room.
    DropNewest,
    /// Make the producer wait for room: nobody loses anything, and ingest
    /// slows to this consumer's pace. Only for a consumer backed by disk.
    Block,
}

/// Which updates a subscriber wants.
#[derive(Debug, Clone, Default)]
pub enum Filter {
    #[default]
    All,
    /// Only these vehicles.
    Vehicles(Vec<VehicleId>),
    /// Positions inside the box (inclusive, in 1e-6°); statuses and events
    /// of every vehicle, since whether a vehicle is inside is a property of
    /// its positions.
    BoundingBox {
        min_lat_e6: i32,
        min_lon_e6: i32,
        max_lat_e6: i32,
        max_lon_e6: i32,
    },
}

impl Filter {
    /// Whether a vehicle with this id and latest position belongs in the
    /// view (a vehicle with no position is outside any box).
    pub fn admits_vehicle(
        &self,
        id: &VehicleId,
        position: Option<&fleetgate_wire::Position>,
    ) -> bool {
        match self {
            Filter::All => true,
            Filter::Vehicles(ids) => ids.contains(id),
            Filter::BoundingBox { .. } => position.is_some_and(|p| self.contains(p)),
        }
    }

    pub(super) fn contains(&self, p: &fleetgate_wire::Position) -> bool {
        match self {
            Filter::BoundingBox {
                min_lat_e6,
                min_lon_e6,
                max_lat_e6,
                max_lon_e6,
            } => {
                (*min_lat_e6..=*max_lat_e6).contains(&p.lat_e6)
                    && (*min_lon_e6..=*max_lon_e6).contains(&p.lon_e6)
            }
            _ => true,
        }
    }

    pub(super) fn admits(&self, update: &Update) -> bool {
        if let Update::Checkpoint(_) = update {
            // Not about any vehicle; the publisher gives it to `block`
            // subscribers only.
            return true;
        }
        match self {
            Filter::All => true,
            // A package that moved away is news for the vehicle it left too.
            Filter::Vehicles(ids) => ids.iter().any(|id| {
                id.as_str() == update.vehicle_id()
                    || matches!(update, Update::Package(p) if p.left.as_ref() == Some(id))
            }),
            Filter::BoundingBox { .. } => match update {
                Update::Position(p) => self.contains(&p.position),
                _ => true,
            },
        }
    }
}
