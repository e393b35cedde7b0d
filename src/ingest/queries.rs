//! Questions and package changes for the fleet's owner.
//!
//! In: the API's calls on [`FleetQueries`]. Out: copies of vehicle state,
//! and package changes applied by the ingest task between batches (each one
//! also goes out as an [`Update::Package`]). Bound: at most
//! [`QUEUED_QUERIES`] questions wait; one more is refused at once
//! ([`FleetUnavailable`]), except package changes, which wait for room.

use tokio::sync::{mpsc, oneshot};

use super::Pipeline;
use crate::config::geofence::FenceConfig;
use crate::fleet::dispatch::{DispatchError, RequestId, RequestView};
use crate::fleet::events::{EventPage, EventQuery};
use crate::fleet::geofence::{FenceEditError, FenceId, FenceView};
use crate::fleet::nearest::TopK;
use crate::fleet::packages::{Package, PackageError, PackageId};
use crate::fleet::{Update, VehicleState};
use crate::topics::VehicleId;

/// Questions that may wait for the ingest task.
pub const QUEUED_QUERIES: usize = 64;

/// A question or a package change for the fleet's owner; handled between
/// batches.
pub(super) enum Query {
    All(oneshot::Sender<Vec<VehicleState>>),
    One(VehicleId, oneshot::Sender<Option<VehicleState>>),
    Nearest(NearestQuery, oneshot::Sender<Vec<Nearby>>),
    Fences(oneshot::Sender<Vec<FenceView>>),
    Dispatch(
        DispatchOp,
        oneshot::Sender<Result<RequestView, DispatchError>>,
    ),
    Fence(FenceId, oneshot::Sender<Option<FenceView>>),
    /// Copies of the open dispatch requests.
    OpenRequests(oneshot::Sender<Vec<RequestView>>),
    /// Create (`id: None`), replace, or delete (`fence: None`).
    EditFence {
        id: Option<FenceId>,
        fence: Option<FenceConfig>,
        reply: oneshot::Sender<Result<Option<FenceView>, FenceEditError>>,
    },
    Package(
        PackageChange,
        oneshot::Sender<Result<Package, PackageError>>,
    ),
    Packages(PackageLookup, oneshot::Sender<Vec<Package>>),
    Events(EventQuery, oneshot::Sender<EventPage>),
}

/// Which packages to copy: one by id, or those a vehicle carries (in
/// transit and delivered ones still held), sorted by id.
#[derive(Debug, Clone)]
pub enum PackageLookup {
    Id(PackageId),
    OnVehicle(VehicleId),
}

/// A dispatch request operation (`crate::fleet::dispatch`).
#[derive(Debug, Clone, Copy)]
pub enum DispatchOp {
    Create { lat: f64, lon: f64 },
    Get(RequestId),
    Cancel(RequestId),
    Release(RequestId),
}

/// A nearest-vehicle search (`crate::fleet::nearest`).
#[derive(Debug, Clone, Copy)]
pub struct NearestQuery {
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
    /// At most this many (capped at `fleet::nearest::MAX_K`).
    pub k: usize,
    /// Offline and unknown vehicles too.
    pub include_all: bool,
}

/// One vehicle a search found, with its distance.
#[derive(Debug, Clone)]
pub struct Nearby {
    pub distance_m: f64,
    pub vehicle: VehicleState,
}

/// The internal interface that changes packages; each change goes out as an
/// [`Update::Package`] (to the bridge's `package_status` queue and dashboards).
#[derive(Debug, Clone)]
pub enum PackageChange {
    Assign {
        id: PackageId,
        from: String,
        to: String,
        vehicle: VehicleId,
    },
    Move {
        id: PackageId,
        vehicle: VehicleId,
    },
    Deliver {
        id: PackageId,
    },
}

/// Read access to the fleet for the API: copies, made by the ingest task.
#[derive(Clone)]
pub struct FleetQueries {
    queries: mpsc::Sender<Query>,
}

/// The fleet could not answer: the gateway is stopping, or too many
/// questions are queued (at most [`QUEUED_QUERIES`]).
#[derive(Debug, thiserror::Error)]
#[error("the fleet state is busy or stopping")]
pub struct FleetUnavailable;

impl FleetQueries {
    pub async fn all(&self) -> Result<Vec<VehicleState>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::All(tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    pub async fn one(&self, id: VehicleId) -> Result<Option<VehicleState>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::One(id, tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    /// The nearest vehicles to a point, nearest first.
    pub async fn nearest(&self, query: NearestQuery) -> Result<Vec<Nearby>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::Nearest(query, tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    /// A dispatch operation; waits for room, like a package change (a
    /// cancel must not be lost).
    pub async fn dispatch(
        &self,
        op: DispatchOp,
    ) -> Result<Result<RequestView, DispatchError>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send(Query::Dispatch(op, tx))
            .await
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    pub async fn fences(&self) -> Result<Vec<FenceView>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::Fences(tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    pub async fn fence(&self, id: FenceId) -> Result<Option<FenceView>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::Fence(id, tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    /// The open dispatch requests (searching or assigned), oldest first;
    /// at most `dispatch.max_open_requests`.
    pub async fn open_requests(&self) -> Result<Vec<RequestView>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::OpenRequests(tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    /// Creates, replaces or deletes a geofence (the fence as stored, `None`
    /// once deleted); waits for room, like a package change.
    pub async fn edit_fence(
        &self,
        id: Option<FenceId>,
        fence: Option<FenceConfig>,
    ) -> Result<Result<Option<FenceView>, FenceEditError>, FleetUnavailable> {
        let (reply, rx) = oneshot::channel();
        self.queries
            .send(Query::EditFence { id, fence, reply })
            .await
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    /// Copies of the recent events `query` asks for (`crate::fleet::events`).
    pub async fn events(&self, query: EventQuery) -> Result<EventPage, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::Events(query, tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    /// Copies of the packages `lookup` names (at most one for an id).
    pub async fn packages(&self, lookup: PackageLookup) -> Result<Vec<Package>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .try_send(Query::Packages(lookup, tx))
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }

    /// Applies a package change; waits for room rather than failing when
    /// questions are queued, since a change must not be lost.
    pub async fn package(
        &self,
        change: PackageChange,
    ) -> Result<Result<Package, PackageError>, FleetUnavailable> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send(Query::Package(change, tx))
            .await
            .map_err(|_| FleetUnavailable)?;
        rx.await.map_err(|_| FleetUnavailable)
    }
}

/// The API's handle and the ingest task's end of the query queue.
pub(super) fn channel() -> (FleetQueries, mpsc::Receiver<Query>) {
    let (queries, rx) = mpsc::channel(QUEUED_QUERIES);
    (FleetQueries { queries }, rx)
}

impl Query {
    /// Answers on the ingest task, which owns the fleet; a package change
    /// appends its update to `updates`.
    pub(super) fn answer(self, pipeline: &mut Pipeline, now_ms: u64, updates: &mut Vec<Update>) {
        match self {
            Query::All(reply) => {
                let _ = reply.send(pipeline.fleet.iter().cloned().collect());
            }
            Query::One(id, reply) => {
                let _ = reply.send(pipeline.fleet.get(&id).cloned());
            }
            Query::Nearest(q, reply) => {
                let fleet = &pipeline.fleet;
                let mut top = TopK::new(q.k);
                fleet.nearest(q.lat, q.lon, q.radius_m, q.k, q.include_all, &mut top);
                let found = top
                    .as_slice()
                    .iter()
                    .filter_map(|&(distance_m, slot)| {
                        let vehicle = fleet.vehicle(slot)?.clone();
                        Some(Nearby {
                            distance_m,
                            vehicle,
                        })
                    })
                    .collect();
                let _ = reply.send(found);
            }
            Query::Dispatch(op, reply) => {
                let now = tokio::time::Instant::now();
                let result = pipeline
                    .fleet
                    .with_dispatch(updates, |d, search, out| match op {
                        DispatchOp::Create { lat, lon } => {
                            d.create(lat, lon, search, now, now_ms, out)
                        }
                        DispatchOp::Get(id) => d.get(id).ok_or(DispatchError::NotFound(id)),
                        DispatchOp::Cancel(id) => d.cancel(id, search, now, now_ms, out),
                        DispatchOp::Release(id) => d.release(id, search, now, now_ms, out),
                    });
                let _ = reply.send(result);
            }
            Query::Fences(reply) => {
                let _ = reply.send(pipeline.fleet.geofences.list());
            }
            Query::Fence(id, reply) => {
                let _ = reply.send(pipeline.fleet.geofences.get(id));
            }
            Query::OpenRequests(reply) => {
                let _ = reply.send(pipeline.fleet.dispatch.open().cloned().collect());
            }
            Query::EditFence { id, fence, reply } => {
                let deleting = fence.is_none();
                let result = pipeline
                    .fleet
                    .edit_fence(id, fence, now_ms, updates)
                    .map(|id| {
                        if deleting {
                            None
                        } else {
                            pipeline.fleet.geofences.get(id)
                        }
                    });
                let _ = reply.send(result);
            }
            Query::Package(change, reply) => {
                let _ = reply.send(pipeline.change_package(change, now_ms, updates));
            }
            Query::Events(query, reply) => {
                let _ = reply.send(pipeline.fleet.events.query(&query));
            }
            Query::Packages(lookup, reply) => {
                let packages = &pipeline.fleet.packages;
                let mut found: Vec<Package> = match &lookup {
                    PackageLookup::Id(id) => packages.get(id).cloned().into_iter().collect(),
                    PackageLookup::OnVehicle(v) => packages.on_vehicle(v).cloned().collect(),
                };
                found.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(found);
            }
        }
    }
}
