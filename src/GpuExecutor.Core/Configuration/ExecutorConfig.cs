namespace GpuExecutor.Configuration;

/// <summary>The executor's whole configuration, read once per call from one TOML file.</summary>
public sealed record ExecutorConfig
{
    public const string DefaultPath = "/etc/gpu-executor/config.toml";
    public const string DefaultStateDir = "/var/lib/gpu-executor";

    /// <summary>Host directory for state that cannot live on container labels.</summary>
    public string StateDir { get; init; } = DefaultStateDir;

    /// <summary>
    /// This host's name in what it writes to the shared store (run leases, bad-generation records,
    /// the run's history), so that an admin reading the store knows which host did what.
    /// </summary>
    public string HostName { get; init; } = DefaultHostName();

    public static string DefaultHostName() => Environment.MachineName;

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
    public MlflowSettings Mlflow { get; init; } = new();
    public TelemetrySettings Telemetry { get; init; } = new();
    public MetricsSettings Metrics { get; init; } = new();
    public LogSettings Logs { get; init; } = new();

    /// <summary>Object stores jobs may read datasets from, by name (the scheme of a dataset source).</summary>
    public IReadOnlyDictionary<string, StoreSettings> Stores { get; init; } = new Dictionary<string, StoreSettings>();
}
