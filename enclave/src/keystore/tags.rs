//! A key's tags: add or replace, remove, read.

use std::collections::BTreeMap;

pub use super::keys::MAX_TAGS;
use super::keys::{Access, check_state, modify, resolve_key, too_many_tags};
use crate::context::Ctx;
use crate::error::KmsError;

/// TagResource: adds `tags` (replacing values of keys already there).
pub async fn tag(ctx: &Ctx<'_>, key_id: Option<String>, tags: Vec<(String, String)>) -> Result<(), KmsError> {
    modify(ctx, key_id, |rec| {
        check_state(rec, Access::Manage)?;
        let mut merged = rec.tags.clone();
        merged.extend(tags);
        if merged.len() > MAX_TAGS {
            return Err(too_many_tags());
        }
        rec.tags = merged;
        Ok(())
    })
    .await?;
    Ok(())
}

/// UntagResource: removes the tags of `keys` (absent ones are no error).
pub async fn untag(ctx: &Ctx<'_>, key_id: Option<String>, keys: &[String]) -> Result<(), KmsError> {
    modify(ctx, key_id, |rec| {
        check_state(rec, Access::Manage)?;
        for key in keys {
            rec.tags.remove(key);
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// ListResourceTags (all of them, sorted by key; the caller pages them).
pub async fn list(ctx: &Ctx<'_>, key_id: &str) -> Result<BTreeMap<String, String>, KmsError> {
    Ok(resolve_key(ctx, key_id).await?.tags)
}
