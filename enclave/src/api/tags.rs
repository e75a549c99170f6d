//! Tags: TagResource, UntagResource, ListResourceTags.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::lifecycle::modify;
use super::params::{self, Access, check_state, length, limit, marker_from, marker_to, parse, required};
use crate::context::Ctx;

/// AWS KMS: at most 50 tags per key.
pub const MAX_TAGS: usize = 50;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    tag_key: Option<String>,
    tag_value: Option<String>,
}

/// Validates tags as AWS does; `aws:` is reserved.
pub fn validate(tags: Vec<Tag>) -> Result<Vec<(String, String)>, KmsError> {
    tags.into_iter()
        .map(|t| {
            let key = required("tags.member.tagKey", t.tag_key)?;
            let value = required("tags.member.tagValue", t.tag_value)?;
            length("tagKey", key.chars().count(), 1, 128)?;
            length("tagValue", value.chars().count(), 0, 256)?;
            if key.starts_with("aws:") {
                return Err(KmsError::Tag("Tag keys beginning with aws: are reserved.".into()));
            }
            Ok((key, value))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagResourceRequest {
    key_id: Option<String>,
    tags: Option<Vec<Tag>>,
}

pub async fn tag_resource(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: TagResourceRequest = parse(body)?;
    let tags = validate(required("tags", req.tags)?)?;
    modify(ctx, req.key_id, |rec| {
        check_state(rec, Access::Manage)?;
        let mut merged = rec.tags.clone();
        merged.extend(tags);
        if merged.len() > MAX_TAGS {
            return Err(KmsError::LimitExceeded(format!(
                "A key can have at most {MAX_TAGS} tags."
            )));
        }
        rec.tags = merged;
        Ok(())
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UntagResourceRequest {
    key_id: Option<String>,
    tag_keys: Option<Vec<String>>,
}

pub async fn untag_resource(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: UntagResourceRequest = parse(body)?;
    let keys = required("tagKeys", req.tag_keys)?;
    for key in &keys {
        length("tagKeys.member", key.chars().count(), 1, 128)?;
    }
    modify(ctx, req.key_id, |rec| {
        check_state(rec, Access::Manage)?;
        for key in &keys {
            rec.tags.remove(key);
        }
        Ok(())
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResourceTagsRequest {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

pub async fn list_resource_tags(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ListResourceTagsRequest = parse(body)?;
    let limit = limit(req.limit, 50, 50)? as usize;
    let rec = params::resolve_key(ctx, &required("keyId", req.key_id)?).await?;
    let after = marker_from(req.marker.as_deref())?;
    let remaining: Vec<(&String, &String)> = rec
        .tags
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
        .collect();
    let page = &remaining[..remaining.len().min(limit)];
    let truncated = remaining.len() > page.len();
    let tags: Vec<Value> = page
        .iter()
        .map(|(k, v)| json!({ "TagKey": k, "TagValue": v }))
        .collect();
    let mut out = json!({ "Tags": tags, "Truncated": truncated });
    if truncated && let Some((last, _)) = page.last() {
        out["NextMarker"] = json!(marker_to(last));
    }
    Ok(out)
}
