//! The downlink: RabbitMQ queues to devices and users.
//!
//! In: deliveries from `bridge.command_queue` (`{"vehicle_id":"truck-7",
//! "command":{"type":"request_position"}}`) and `bridge.notification_queue`
//! (`{"userId":"…","content":"…"}`, the notification contract). Out: a
//! postcard `Command` on `v/<vid>/cmd` through the broker; the content to
//! every WebSocket the user opened, or to their mailbox. Bound: a prefetch
//! of [`PREFETCH`] unacked deliveries per consumer.
//!
//! A delivery is acked only once handled: a command once it was handed to
//! the broker (if the broker's queue is full it is nacked and requeued), a
//! notification once it reached the user's sockets or mailbox. Bad JSON is
//! rejected without requeue and counted (`bridge_downlink_rejected_total`).

use std::sync::Arc;

use bytes::Bytes;
use fleetgate_wire::json::CommandJson;
use fleetgate_wire::{encode, Command, MAX_ENCODED_LEN};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::bridge::mailboxes::{Mailboxes, MAX_NOTIFICATION_BYTES};
use crate::broker::BrokerPublisher;
use crate::config::BridgeConfig;
use crate::metrics::Metrics;
use crate::topics::{command_topic, VehicleId};

/// Unacked deliveries per consumer.
pub const PREFETCH: u16 = 32;

#[derive(Clone)]
pub struct Downlink {
    pub config: BridgeConfig,
    pub broker: BrokerPublisher,
    pub mailboxes: Arc<Mailboxes>,
    pub metrics: Arc<Metrics>,
}

/// The consumers of one session; they stop when this is dropped.
pub struct Consumers(Vec<JoinHandle<()>>);

impl Drop for Consumers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandMessage {
    vehicle_id: String,
    command: CommandJson,
}

#[derive(Debug, Deserialize)]
struct Notification {
    #[serde(rename = "userId")]
    user_id: String,
    content: String,
}

impl Downlink {
    pub async fn start(&self, connection: &Connection) -> Result<Consumers, lapin::Error> {
        let commands = self
            .consume(connection, &self.config.command_queue, "fleetgate-commands")
            .await?;
        let notifications = self
            .consume(
                connection,
                &self.config.notification_queue,
                "fleetgate-notifications",
            )
            .await?;
        let me = self.clone();
        let command_task = tokio::spawn(async move { me.serve(commands, Self::command).await });
        let me = self.clone();
        let notification_task =
            tokio::spawn(async move { me.serve(notifications, Self::notification).await });
        Ok(Consumers(vec![command_task, notification_task]))
    }

    async fn consume(
        &self,
        connection: &Connection,
        queue: &str,
        tag: &str,
    ) -> Result<Consumer, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    async fn serve(&self, mut consumer: Consumer, handle: fn(&Self, &[u8]) -> Handled) {
        while let Some(delivery) = consumer.next().await {
            let Ok(delivery) = delivery else {
                break;
            };
            let outcome = handle(self, &delivery.data);
            if let Err(e) = settle(&delivery, outcome, &self.metrics).await {
                tracing::warn!(error = %e, "cannot settle a downlink delivery; RabbitMQ will redeliver it");
                break;
            }
        }
    }

    fn command(&self, body: &[u8]) -> Handled {
        let parsed: Result<CommandMessage, _> = serde_json::from_slice(body);
        let Ok(message) = parsed else {
            return Handled::Reject("not a command message");
        };
        let Some(vehicle) = VehicleId::parse(&message.vehicle_id) else {
            return Handled::Reject("bad vehicle id");
        };
        let Ok(command) = Command::try_from(message.command) else {
            return Handled::Reject("command out of range");
        };
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let Ok(bytes) = encode(&command, &mut buf) else {
            return Handled::Reject("command does not encode");
        };
        if self
            .broker
            .publish(command_topic(vehicle), Bytes::copy_from_slice(bytes))
        {
            Metrics::inc(&self.metrics.bridge_commands_total);
            Handled::Done
        } else {
            Handled::Retry
        }
    }

    fn notification(&self, body: &[u8]) -> Handled {
        let parsed: Result<Notification, _> = serde_json::from_slice(body);
        let Ok(n) = parsed else {
            return Handled::Reject("not a notification");
        };
        if n.user_id.is_empty() || n.user_id.len() > 256 {
            return Handled::Reject("userId empty or longer than 256 bytes");
        }
        if n.content.len() > MAX_NOTIFICATION_BYTES {
            return Handled::Reject("content longer than 4096 bytes");
        }
        self.mailboxes.deliver(&n.user_id, &n.content);
        Metrics::inc(&self.metrics.bridge_notifications_total);
        Handled::Done
    }
}

enum Handled {
    Done,
    /// Could not be handled now (the broker's queue is full): requeue.
    Retry,
    /// Will never be handled: reject without requeue.
    Reject(&'static str),
}

async fn settle(
    delivery: &Delivery,
    outcome: Handled,
    metrics: &Metrics,
) -> Result<(), lapin::Error> {
    match outcome {
        Handled::Done => delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Handled::Retry => {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
                .map(|_| ())
        }
        Handled::Reject(why) => {
            Metrics::inc(&metrics.bridge_downlink_rejected_total);
            tracing::warn!(
                why,
                bytes = delivery.data.len(),
                "downlink message rejected"
            );
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map(|_| ())
        }
    }
}
