namespace GpuExecutor.Configuration;

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

    /// <summary>
    /// A Docker daemon that has not answered the agent for this long counts as gone with the job's
    /// container: the agent makes its final commit of what is complete and exits. Longer than a
    /// daemon restart, so a restart with live-restore changes nothing.
    /// </summary>
    public TimeSpan AgentDaemonLost { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// How long the run's lease lasts without a renewal: how long another host waits for a lost
    /// host's run (plus the clock-skew tolerance). The agent renews it four times as often.
    /// </summary>
    public TimeSpan LeaseTimeToLive { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>
    /// How far apart two hosts' clocks may be: a lease counts as expired only this long after the
    /// expiry its holder wrote. NTP keeps hosts within milliseconds; the default allows for a host
    /// whose time sync has lapsed for days.
    /// </summary>
    public TimeSpan LeaseClockSkew { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a job waits for another job's live lease on its run before it fails.</summary>
    public TimeSpan LeaseWait { get; init; } = TimeSpan.FromSeconds(600);

    public StoreSettings StoreOrLocal(string stateDir) => Store ?? new StoreSettings { Name = LocalStoreName, Kind = StoreKind.File, Root = Path.Combine(stateDir, "checkpoint-store") };
}
