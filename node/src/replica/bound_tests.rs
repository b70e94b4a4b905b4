//! The key bound (`--max-key-bytes`): a write or a merge that would grow a
//! key's stored versions past it is refused and stores nothing; one that
//! replaces versions, or shrinks a key, is taken.

use super::*;
use crate::version::Context;

fn put(len: usize, byte: u8) -> Mutation {
    Mutation::Put {
        data: vec![byte; len],
        content_type: "application/octet-stream".into(),
    }
}

fn replica(actor: &str, limit: u64) -> Replica {
    Replica::open("n1".into(), actor.into(), Store::memory())
        .expect("open")
        .with_max_key_bytes(limit)
}

/// Writes `len` bytes of `byte` to key `k` of bucket `b` under `ctx`,
/// keeping siblings.
async fn write(
    r: &Replica,
    ctx: &Context,
    len: usize,
    byte: u8,
) -> Result<WriteOutcome, WriteError> {
    r.write("b", b"k", ctx, put(len, byte), Conflicts::Siblings)
        .await
}

#[tokio::test]
async fn a_sibling_that_would_grow_the_key_past_the_bound_is_refused_and_nothing_stored() {
    let r = replica("n1", 3000);
    let first = write(&r, &Context::new(), 2000, 1)
        .await
        .expect("within the bound");
    // Without a context it would be a second sibling: 4000 bytes and more.
    let refused = write(&r, &Context::new(), 2000, 2).await;
    assert!(
        matches!(refused, Err(WriteError::KeyTooLarge { size, limit: 3000 }) if size > 4000),
        "{refused:?}"
    );
    assert_eq!(r.read("b", b"k").expect("read"), Some(first.object.clone()));
    // With the context it replaces the version: within the bound.
    let replaced = write(&r, &first.object.context(), 2000, 3)
        .await
        .expect("a replacing write");
    assert_eq!(replaced.object.sibling_count(), 1);
}

#[tokio::test]
async fn a_merge_past_the_bound_is_refused_and_a_shrinking_write_is_taken() {
    let here = replica("n1", 3000);
    let there = replica("n2", 3000);
    write(&here, &Context::new(), 2000, 1).await.expect("here");
    let theirs = write(&there, &Context::new(), 2000, 2)
        .await
        .expect("there")
        .object;
    let before = here.read("b", b"k").expect("read");
    let refused = here.merge("b", b"k", &theirs, Conflicts::Siblings).await;
    assert!(
        matches!(refused, Err(WriteError::KeyTooLarge { .. })),
        "{refused:?}"
    );
    assert_eq!(here.read("b", b"k").expect("read"), before);
    // A key over a bound lowered since it was written can still shrink.
    let lowered = Replica::open("n1".into(), "n1".into(), here.store().clone())
        .expect("reopen")
        .with_max_key_bytes(100);
    let ctx = before.expect("stored").context();
    write(&lowered, &ctx, 1000, 4)
        .await
        .expect("a write that shrinks the key");
}
