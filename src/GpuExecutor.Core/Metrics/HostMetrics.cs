namespace GpuExecutor.Metrics;

/// <summary>
/// Every metric gpu-executor exports, with its type and help: the one list the textfile's
/// HELP and TYPE lines, the README's table and the counting sites share.
/// </summary>
public static class HostMetrics
{
    public sealed record Family(string Name, string Type, string Help);

    public const string VerbCalls = "gpu_executor_verb_calls_total";
    public const string CacheHits = "gpu_executor_dataset_cache_hits_total";
    public const string CacheMisses = "gpu_executor_dataset_cache_misses_total";
    public const string FetchedBytes = "gpu_executor_dataset_fetched_bytes_total";
    public const string CacheEvictions = "gpu_executor_dataset_cache_evictions_total";
    public const string CacheEvictedBytes = "gpu_executor_dataset_cache_evicted_bytes_total";
    public const string CacheBytes = "gpu_executor_dataset_cache_bytes";
    public const string CacheObjects = "gpu_executor_dataset_cache_objects";
    public const string CheckpointCommits = "gpu_executor_checkpoint_commits_total";
    public const string CheckpointCommitFailures = "gpu_executor_checkpoint_commit_failures_total";
    public const string CheckpointUploadedBytes = "gpu_executor_checkpoint_uploaded_bytes_total";
    public const string Reattaches = "gpu_executor_reattaches_total";
    public const string Continuations = "gpu_executor_continuations_total";
    public const string ContinuationsRefused = "gpu_executor_continuations_refused_total";
    public const string BuildInfo = "gpu_executor_build_info";
    public const string DockerUp = "gpu_executor_docker_up";
    public const string GpuHeld = "gpu_executor_gpu_held";
    public const string GpuHolder = "gpu_executor_gpu_holder_info";
    public const string GpuUtilization = "gpu_executor_gpu_utilization_ratio";
    public const string GpuMemoryUsed = "gpu_executor_gpu_memory_used_bytes";
    public const string GpuSampleTime = "gpu_executor_gpu_sample_timestamp_seconds";
    public const string GpuWaitingJobs = "gpu_executor_gpu_waiting_jobs";
    public const string GpuOldestWait = "gpu_executor_gpu_oldest_wait_seconds";
    public const string ActiveRuns = "gpu_executor_checkpoint_active_runs";
    public const string LastSafeCommit = "gpu_executor_checkpoint_last_safe_commit_timestamp_seconds";
    public const string SinceSafeCommit = "gpu_executor_checkpoint_since_safe_commit_seconds";

    /// <summary>In the order the textfile lists them.</summary>
    public static readonly IReadOnlyList<Family> Families =
    [
        new(BuildInfo, "gauge", "Always 1; the version of gpu-executor that wrote this file."),
        new(DockerUp, "gauge", "1 when the Docker daemon answered the writer of this file (the GPU ledger below is then current), else 0."),
        new(GpuHeld, "gauge", "1 when a job's container holds the GPU, 0 when it is free."),
        new(GpuHolder, "gauge", "Always 1, for each held GPU: the job and the project holding it."),
        new(GpuUtilization, "gauge", "The held GPU's utilisation at its job's last sample (0 to 1)."),
        new(GpuMemoryUsed, "gauge", "The held GPU's memory in use at its job's last sample."),
        new(GpuSampleTime, "gauge", "When the held GPU was last sampled (Unix time)."),
        new(GpuWaitingJobs, "gauge", "Jobs whose prepare waits for GPUs to free up."),
        new(GpuOldestWait, "gauge", "How long the longest-waiting job has waited for GPUs (0 when none waits)."),
        new(CacheBytes, "gauge", "Bytes of complete objects in the host's dataset cache."),
        new(CacheObjects, "gauge", "Complete objects in the host's dataset cache."),
        new(CacheHits, "counter", "Dataset objects a job got from the host cache."),
        new(CacheMisses, "counter", "Dataset objects fetched from a store because the cache lacked them."),
        new(FetchedBytes, "counter", "Bytes fetched from stores into the dataset cache."),
        new(CacheEvictions, "counter", "Objects evicted from the dataset cache."),
        new(CacheEvictedBytes, "counter", "Bytes evicted from the dataset cache."),
        new(CheckpointCommits, "counter", "Checkpoint generations committed to the store."),
        new(CheckpointCommitFailures, "counter", "Checkpoint commit attempts that failed (each is retried)."),
        new(CheckpointUploadedBytes, "counter", "Checkpoint bytes uploaded to the store (blobs the store lacked)."),
        new(ActiveRuns, "gauge", "Checkpointed runs with a live checkpoint agent on this host."),
        new(LastSafeCommit, "gauge", "When the run's newest generation was committed from this host (Unix time); its agent's start when it has committed none yet."),
        new(SinceSafeCommit, "gauge", "Seconds from the run's last safe commit to the writing of this file."),
        new(Reattaches, "counter", "Jobs that adopted a dead job's training instead of starting it again."),
        new(Continuations, "counter", "Continuation jobs asked for at a run's deadline."),
        new(ContinuationsRefused, "counter", "Continuations not asked for: the run was at its limit or the API refused."),
        new(VerbCalls, "counter", "Calls of gpu-executor's verbs, by verb and outcome."),
    ];
}
