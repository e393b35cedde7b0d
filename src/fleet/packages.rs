//! Packages riding on vehicles: "where is my package now, and where is it
//! going?"
//!
//! In: assign / move / deliver calls (the internal interface; the REST API
//! that drives it comes with the services). Out: a [`PackageUpdate`] for
//! every change, through the fan-out to the bridge (the `package_status`
//! queue) and dashboards. Bound: `fleet.max_packages` packages; one more is
//! refused with [`PackageError::Full`]; delivered packages stay listed
//! until the registry is full, then the oldest delivered one makes room.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::topics::VehicleId;

/// A package id: the same character rules as a vehicle id.
pub type PackageId = VehicleId;

/// Longest place name.
pub const MAX_PLACE_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageStatus {
    /// On a vehicle, not delivered yet.
    InTransit,
    Delivered,
}

/// The package record, as the source system's consumers know it
/// (`from`, `to`, `vehicleId`), plus its id and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub id: String,
    pub from: String,
    pub to: String,
    #[serde(rename = "vehicleId")]
    pub vehicle_id: String,
    pub status: PackageStatus,
}

/// A package changed; the bridge sends it to `package_status` with
/// `message_id` = the carrying vehicle's id.
#[derive(Debug, Clone)]
pub struct PackageUpdate {
    pub package: Package,
    pub time_ms: u64,
    /// For a move: the vehicle the package left, so a view of that vehicle
    /// (`/packages/track/{vehicleId}`, `/ws?vehicles=`) sees it go.
    pub left: Option<VehicleId>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackageError {
    #[error("package registry full: at most {0} packages in transit")]
    Full(usize),
    #[error("unknown package {0:?}")]
    Unknown(String),
    #[error("package {0:?} is already delivered")]
    AlreadyDelivered(String),
    #[error("package {0:?} exists and is in transit")]
    InTransit(String),
    #[error("place name longer than {MAX_PLACE_LEN} bytes or empty")]
    BadPlace,
}

pub struct Packages {
    by_id: HashMap<PackageId, Package>,
    delivered: VecDeque<PackageId>,
    capacity: usize,
}

impl Packages {
    pub fn new(capacity: usize) -> Packages {
        Packages {
            by_id: HashMap::with_capacity(capacity),
            delivered: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn get(&self, id: &PackageId) -> Option<&Package> {
        self.by_id.get(id)
    }

    pub fn on_vehicle<'a>(
        &'a self,
        vehicle: &'a VehicleId,
    ) -> impl Iterator<Item = &'a Package> + 'a {
        self.by_id
            .values()
            .filter(move |p| p.vehicle_id == vehicle.as_str())
    }

    /// A new package (or a re-assignment of a delivered one) on `vehicle`;
    /// one in transit is refused ([`PackageError::InTransit`]): moving it
    /// is [`Packages::move_to`].
    pub fn assign(
        &mut self,
        id: PackageId,
        from: &str,
        to: &str,
        vehicle: &VehicleId,
    ) -> Result<Package, PackageError> {
        for place in [from, to] {
            if place.is_empty() || place.len() > MAX_PLACE_LEN {
                return Err(PackageError::BadPlace);
            }
        }
        if self
            .by_id
            .get(&id)
            .is_some_and(|p| p.status == PackageStatus::InTransit)
        {
            return Err(PackageError::InTransit(id.to_string()));
        }
        if !self.by_id.contains_key(&id) && self.by_id.len() >= self.capacity {
            // Room from the oldest delivered package, never from one in transit.
            let Some(oldest) = self.delivered.pop_front() else {
                return Err(PackageError::Full(self.capacity));
            };
            self.by_id.remove(&oldest);
        }
        self.delivered.retain(|d| d != &id);
        let package = Package {
            id: id.to_string(),
            from: from.to_owned(),
            to: to.to_owned(),
            vehicle_id: vehicle.to_string(),
            status: PackageStatus::InTransit,
        };
        self.by_id.insert(id, package.clone());
        Ok(package)
    }

    /// The package, if it exists and is not delivered yet.
    fn in_transit(&mut self, id: &PackageId) -> Result<&mut Package, PackageError> {
        let package = self
            .by_id
            .get_mut(id)
            .ok_or_else(|| PackageError::Unknown(id.to_string()))?;
        if package.status == PackageStatus::Delivered {
            return Err(PackageError::AlreadyDelivered(id.to_string()));
        }
        Ok(package)
    }

    /// The package moved to another vehicle (a hand-over at a depot); with
    /// the vehicle it left, when that is another one.
    pub fn move_to(
        &mut self,
        id: &PackageId,
        vehicle: &VehicleId,
    ) -> Result<(Package, Option<VehicleId>), PackageError> {
        let package = self.in_transit(id)?;
        let left = if package.vehicle_id == vehicle.as_str() {
            None
        } else {
            VehicleId::parse(&package.vehicle_id)
        };
        package.vehicle_id = vehicle.to_string();
        Ok((package.clone(), left))
    }

    pub fn deliver(&mut self, id: &PackageId) -> Result<Package, PackageError> {
        let package = self.in_transit(id)?;
        package.status = PackageStatus::Delivered;
        let package = package.clone();
        self.delivered.push_back(id.clone());
        Ok(package)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> VehicleId {
        VehicleId::parse(s).unwrap()
    }

    #[test]
    fn assign_move_deliver() {
        let mut p = Packages::new(2);
        let a = p
            .assign(id("p1"), "Depot Noord", "Dam 1", &id("truck-1"))
            .unwrap();
        assert_eq!(a.status, PackageStatus::InTransit);
        assert_eq!(
            p.assign(id("p1"), "a", "b", &id("truck-9")),
            Err(PackageError::InTransit("p1".into())),
            "an id in transit is not re-created"
        );
        let (moved, left) = p.move_to(&id("p1"), &id("truck-2")).unwrap();
        assert_eq!(moved.vehicle_id, "truck-2");
        assert_eq!(left, Some(id("truck-1")));
        assert_eq!(
            p.deliver(&id("p1")).unwrap().status,
            PackageStatus::Delivered
        );
        assert_eq!(
            p.deliver(&id("p1")),
            Err(PackageError::AlreadyDelivered("p1".into()))
        );
        assert_eq!(
            p.move_to(&id("nope"), &id("t")),
            Err(PackageError::Unknown("nope".into()))
        );
    }

    #[test]
    fn full_registry_reuses_delivered_places_only() {
        let mut p = Packages::new(2);
        p.assign(id("p1"), "a", "b", &id("t")).unwrap();
        p.assign(id("p2"), "a", "b", &id("t")).unwrap();
        assert_eq!(
            p.assign(id("p3"), "a", "b", &id("t")),
            Err(PackageError::Full(2))
        );
        p.deliver(&id("p1")).unwrap();
        assert!(p.assign(id("p3"), "a", "b", &id("t")).is_ok());
        assert!(p.get(&id("p1")).is_none(), "the delivered one made room");
    }

    #[test]
    fn the_json_keeps_the_source_systems_field_names() {
        let mut p = Packages::new(1);
        let a = p
            .assign(id("p1"), "Depot", "Dam 1", &id("truck-1"))
            .unwrap();
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["vehicleId"], "truck-1");
        assert_eq!(json["from"], "Depot");
        assert_eq!(json["to"], "Dam 1");
    }
}
