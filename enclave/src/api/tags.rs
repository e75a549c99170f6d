//! Tags: TagResource, UntagResource, ListResourceTags. The rules are in
//! [`crate::keystore::tags`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{Empty, length, limit, marker_from, marker_to, parse, render, required};
use crate::context::Ctx;
use crate::keystore::tags;

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
    let new = validate(required("tags", req.tags)?)?;
    tags::tag(ctx, req.key_id, new).await?;
    render(&Empty {})
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
    tags::untag(ctx, req.key_id, &keys).await?;
    render(&Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResourceTagsRequest {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TagEntry<'a> {
    tag_key: &'a str,
    tag_value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListResourceTagsResponse<'a> {
    tags: Vec<TagEntry<'a>>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

pub async fn list_resource_tags(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ListResourceTagsRequest = parse(body)?;
    let limit = limit(req.limit, 50, 50)? as usize;
    let all = tags::list(ctx, &required("keyId", req.key_id)?).await?;
    let after = marker_from(req.marker.as_deref())?;
    let remaining: Vec<(&String, &String)> = all
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
        .collect();
    let page = &remaining[..remaining.len().min(limit)];
    let truncated = remaining.len() > page.len();
    render(&ListResourceTagsResponse {
        tags: page
            .iter()
            .map(|(k, v)| TagEntry {
                tag_key: k,
                tag_value: v,
            })
            .collect(),
        truncated,
        next_marker: if truncated {
            page.last().map(|(last, _)| marker_to(last))
        } else {
            None
        },
    })
}
