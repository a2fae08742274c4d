namespace GpuExecutor.Configuration;

/// <summary>The executor's whole configuration, read once per call from one TOML file.</summary>
public sealed record ExecutorConfig
{
    public const string DefaultPath = "/etc/gpu-executor/config.toml";

    /// <summary>Host directory for state that cannot live on container labels.</summary>
    public string StateDir { get; init; } = "/var/lib/gpu-executor";

    public DockerSettings Docker { get; init; } = new();
    public ImageSettings Images { get; init; } = new();
    public MountSettings Builds { get; init; } = new("/var/lib/gpu-executor/builds", "/builds");
    public MountSettings Cache { get; init; } = new("/var/lib/gpu-executor/cache", "/cache");
    public ContainerDefaults Container { get; init; } = new();
    public RunSettings Run { get; init; } = new();
    public CleanupSettings Cleanup { get; init; } = new();
    public GpuSettings Gpus { get; init; } = new();

    public DatasetSettings Datasets { get; init; } = new();

    public CheckpointSettings Checkpoints { get; init; } = new();

    public ContinuationSettings Continuation { get; init; } = new();

    /// <summary>Object stores jobs may read datasets from, by name (the scheme of a dataset source).</summary>
    public IReadOnlyDictionary<string, StoreSettings> Stores { get; init; } = new Dictionary<string, StoreSettings>();
}

public sealed record DockerSettings
{
    /// <summary>unix:///path or tcp://host:port. API version is negotiated (dockerd 20.10 speaks 1.41).</summary>
    public string Endpoint { get; init; } = "unix:///var/run/docker.sock";
}

public enum PullPolicy
{
    Never,
    IfNotPresent,
    Always,
}

public sealed record ImageSettings
{
    /// <summary>Used when the job names no image.</summary>
    public string Default { get; init; } = "";

    /// <summary>Glob patterns; empty admits every image (as GitLab's allowed_images does).</summary>
    public IReadOnlyList<string> Allowed { get; init; } = [];

    public PullPolicy PullPolicy { get; init; } = PullPolicy.IfNotPresent;

    /// <summary>
    /// Image for the runner's own stages (sources, caches, artifacts). Empty runs them in the job
    /// container, which then needs git and gitlab-runner-helper.
    /// </summary>
    public string Helper { get; init; } = "";
}

/// <summary>A host directory and where it appears inside the job's containers.</summary>
public sealed record MountSettings(string HostDir, string ContainerDir);

public sealed record Ulimit(string Name, long Soft, long Hard);

public sealed record ContainerDefaults
{
    /// <summary>Size of /dev/shm in bytes; PyTorch DataLoader workers need far more than Docker's 64 MiB.</summary>
    public long? ShmSizeBytes { get; init; }

    /// <summary>"private", "shareable" or "host". With "host" the shm size does not apply.</summary>
    public string? IpcMode { get; init; }

    public string? NetworkMode { get; init; }

    /// <summary>CPU limit in CPUs (Docker's NanoCPUs / 1e9).</summary>
    public double? Cpus { get; init; }

    public long? MemoryBytes { get; init; }

    public IReadOnlyList<Ulimit> Ulimits { get; init; } = [];
}

public sealed record RunSettings
{
    /// <summary>
    /// After SIGTERM, how long the stage's processes inside the container get between the
    /// graceful signal and SIGKILL. Keep it below the runner's graceful_kill_timeout (600 s).
    /// </summary>
    public TimeSpan StopGracePeriod { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The signal sent first on cancel or timeout.</summary>
    public string StopSignal { get; init; } = "TERM";

    /// <summary>
    /// The runner's graceful_kill_timeout (its SIGTERM-to-SIGKILL wait for this process), which
    /// the executor cannot read: the stop grace period plus the final checkpoint commit must fit in it.
    /// </summary>
    public TimeSpan RunnerGracefulKillTimeout { get; init; } = TimeSpan.FromSeconds(600);
}

public sealed record CleanupSettings
{
    /// <summary>cleanup's own bound; cleanup is not bounded by the job's timeout or cancel.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>gc removes managed containers this long after their job's deadline passed.</summary>
    public TimeSpan GcGracePeriod { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Whether cleanup deletes the job's host builds directory.</summary>
    public bool RemoveBuildsDir { get; init; } = true;
}

public enum GpuMode
{
    /// <summary>Containers get a device request for their GPUs (the NVIDIA Container Toolkit).</summary>
    Nvidia,

    /// <summary>
    /// GPUs are assigned, labelled and put in the environment, but no device request is sent:
    /// for CPU-only hosts and test beds, where Docker would refuse the nvidia driver.
    /// </summary>
    None,
}

public sealed record GpuSettings
{
    public GpuMode Mode { get; init; } = GpuMode.Nvidia;

    /// <summary>The nvidia-smi program: a name on PATH or an absolute path.</summary>
    public string NvidiaSmi { get; init; } = "nvidia-smi";

    /// <summary>GPU indexes or UUIDs this runner may hand out; empty means every GPU of the host.</summary>
    public IReadOnlyList<string> Pool { get; init; } = [];

    /// <summary>GPUs a job gets when it sets no GPU_COUNT.</summary>
    public int DefaultCount { get; init; }

    /// <summary>The most GPUs one job may ask for; null means the whole pool.</summary>
    public int? MaxCount { get; init; }

    /// <summary>A GPU no job holds but with more memory in use than this is busy with something else.</summary>
    public long BusyMemoryMiB { get; init; } = 1024;

    /// <summary>How long a job waits for GPUs to free up before it fails.</summary>
    public TimeSpan WaitTimeout { get; init; } = TimeSpan.FromHours(1);
}

public enum StoreKind
{
    /// <summary>An S3-compatible object store (AWS S3, MinIO, Ceph RGW, s3rver).</summary>
    S3,

    /// <summary>A directory on the host whose subdirectories play the buckets.</summary>
    File,
}

/// <summary>A secret from the config: kept out of every ToString, so no log line can carry it.</summary>
public sealed record Secret(string Value)
{
    public override string ToString() => "***";
}

public sealed record StoreSettings
{
    public required string Name { get; init; }
    public StoreKind Kind { get; init; }

    /// <summary>S3: the endpoint URL; null means AWS's own for the region.</summary>
    public string? Endpoint { get; init; }
    public string Region { get; init; } = "us-east-1";
    public bool PathStyle { get; init; }

    /// <summary>S3: from the config; null means the SDK's environment chain (AWS_ACCESS_KEY_ID, …).</summary>
    public Secret? AccessKeyId { get; init; }
    public Secret? SecretAccessKey { get; init; }

    /// <summary>File: the directory whose subdirectories are the buckets.</summary>
    public string? Root { get; init; }

    /// <summary>"bucket" or "bucket/prefix": what jobs may read. Nothing else is readable.</summary>
    public IReadOnlyList<string> Allow { get; init; } = [];

    /// <summary>Whether the job's container gets the store's credentials (off unless the admin says so).</summary>
    public bool PassCredentialsToJob { get; init; }
}

public sealed record DatasetSettings
{
    /// <summary>The dataset cache is trimmed to this many bytes after each job's datasets arrive; null: no cap.</summary>
    public long? CacheMaxBytes { get; init; }
}

public sealed record CheckpointSettings
{
    /// <summary>The built-in store: a directory under state_dir, used when no store is named.</summary>
    public const string LocalStoreName = "local-checkpoints";

    /// <summary>Where runs are kept; by default a file store under state_dir.</summary>
    public StoreSettings? Store { get; init; }

    public string Bucket { get; init; } = "checkpoints";

    /// <summary>Prepended to every key ("team-a/"): several runners can share a bucket.</summary>
    public string Prefix { get; init; } = "";

    /// <summary>Where the run's checkpoint directory appears inside the job container.</summary>
    public string ContainerDir { get; init; } = "/checkpoints";

    /// <summary>Committed generations kept per run; older ones, and blobs only they used, are deleted.</summary>
    public int KeepGenerations { get; init; } = 3;

    /// <summary>A checkpoint directory unchanged this long holds a complete checkpoint (for trainers that write no marker); zero turns this off.</summary>
    public TimeSpan QuietPeriod { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How often the agent looks at the directory.</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The stop signal goes to the trainer this long before the job's deadline.</summary>
    public TimeSpan DeadlineMargin { get; init; } = TimeSpan.FromSeconds(300);

    /// <summary>After the main step ends, how long `run` waits for the agent's final commit.</summary>
    public TimeSpan FinalCommitWait { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>Once the job's container is gone, how long the agent keeps retrying a failing commit.</summary>
    public TimeSpan AgentGiveUp { get; init; } = TimeSpan.FromMinutes(10);

    public StoreSettings StoreOrLocal(string stateDir) => Store ?? new StoreSettings { Name = LocalStoreName, Kind = StoreKind.File, Root = Path.Combine(stateDir, "checkpoint-store") };
}

/// <summary>
/// Continuation: a run that reaches its job's deadline is retried through the GitLab API once the
/// job has ended, and the retry resumes from the newest checkpoint. Off unless a URL and a token are set.
/// </summary>
public sealed record ContinuationSettings
{
    /// <summary>The GitLab instance (https://gitlab.example.com). From the config only: a job's own variables could point it elsewhere, and the token would go there.</summary>
    public Uri? GitLabUrl { get; init; }

    /// <summary>A token that may retry the project's jobs (the api scope, Developer role or more).</summary>
    public Secret? Token { get; init; }

    /// <summary>The most jobs one chain may take, the first included.</summary>
    public int MaxSegments { get; init; } = 10;

    /// <summary>How long the agent waits for GitLab to mark the job ended before it gives up on continuing it.</summary>
    public TimeSpan JobEndWait { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>How often the agent asks GitLab whether the job has ended.</summary>
    public TimeSpan JobEndPollInterval { get; init; } = TimeSpan.FromSeconds(3);

    public bool Enabled => GitLabUrl is not null && Token is not null;
}
