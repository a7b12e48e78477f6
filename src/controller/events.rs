//! Kubernetes Events of this replica, each with a [`Reason`].

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::api::Reason;

pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, identity: &str) -> Self {
        let reporter = Reporter { controller: "lockguard".into(), instance: Some(identity.to_string()) };
        Self { recorder: Recorder::new(client, reporter) }
    }

    /// Publishes an Event; a failure to publish is logged, never fatal.
    pub async fn publish(&self, reference: &ObjectReference, type_: EventType, reason: Reason, note: String) {
        let event = Event {
            type_,
            reason: reason.as_str().into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(%reason, error = %e, "cannot publish event");
        }
    }
}
