//! Reads from the API server that must not mistake "not served yet" for "gone".

/// Gets object `name`; `None` only when the API server says that this very object does not
/// exist. Just after an API server restart a custom resource's path can answer 404 before
/// its CRD is served again: taken for "gone", that would free the items of a live claim.
pub async fn get_existing<K>(api: &kube::Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(object) => Ok(Some(object)),
        Err(kube::Error::Api(status)) if status.is_not_found() && names_object(&status, name) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Drops what the API server and kubectl keep on an object for themselves (managedFields,
/// kubectl's last-applied copy): nothing here reads them, and they were about half of each
/// cached claim and most of each pool (the field ownership of every ledger entry). Nothing
/// writes back a whole object, so they are never lost on the server.
pub fn lean<K: kube::ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// A 404 about object `name` itself (its details name it), not about the resource type.
fn names_object(status: &kube::core::Status, name: &str) -> bool {
    status.details.as_ref().is_some_and(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_404_that_names_the_object_means_it_is_gone() {
        let status = |name: &str| -> kube::core::Status {
            serde_json::from_value(serde_json::json!({
                "code": 404, "reason": "NotFound", "message": "not found",
                "details": { "name": name, "group": "lockguard.dev", "kind": "claims" }
            }))
            .expect("status")
        };
        assert!(names_object(&status("web"), "web"));
        // "the server could not find the requested resource": a CRD not served (yet).
        assert!(!names_object(&status(""), "web"));
        let bare: kube::core::Status =
            serde_json::from_value(serde_json::json!({ "code": 404, "reason": "NotFound", "message": "the server could not find the requested resource" }))
                .expect("status");
        assert!(!names_object(&bare, "web"));
    }
}
