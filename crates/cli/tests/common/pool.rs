use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Runs `work` on every item as its own task, at most `limit` at a time; results keep input order.
pub async fn for_each_concurrent<T, R, F, Fut>(items: Vec<T>, limit: usize, work: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit));
    let work = Arc::new(work);
    let tasks: Vec<_> = items
        .into_iter()
        .map(|item| {
            let permits = Arc::clone(&permits);
            let work = Arc::clone(&work);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                work(item).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("worker task panicked"));
    }
    results
}
