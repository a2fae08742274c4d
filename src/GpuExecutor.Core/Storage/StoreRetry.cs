using Polly;
using Polly.Retry;

namespace GpuExecutor.Storage;

/// <summary>
/// The one retry policy for object-store requests: transient failures (5xx, resets, timeouts,
/// short bodies) are retried with jittered exponential backoff, six attempts over roughly 10 s
/// per request, before the caller's failure handling takes over.
/// </summary>
public static class StoreRetry
{
    public const int MaximumAttempts = 6;

    public static ResiliencePipeline Create(Action<string> log) =>
        new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                MaxRetryAttempts = MaximumAttempts - 1,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromMilliseconds(300),
                ShouldHandle = new PredicateBuilder().Handle<ObjectStoreException>(error => error.Transient).Handle<IOException>(),
                OnRetry = arguments =>
                {
                    log($"  retrying after: {arguments.Outcome.Exception?.Message}");
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
}
