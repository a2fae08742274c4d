using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Continuation;
using GpuExecutor.Datasets;
using GpuExecutor.Gpus;
using GpuExecutor.Storage;

namespace GpuExecutor.Composition;

/// <summary>
/// The one place that creates adapters: the Docker driver, the object stores (S3 or a host
/// directory), nvidia-smi, the GitLab client and the launchers of detached processes. Verbs take them from here
/// and hand them to workflows, which see only the interfaces; tests build workflows with fakes.
/// </summary>
public sealed class CompositionRoot(ExecutorConfig config, string configPath) : IDisposable
{
    private IContainerDriver? _containers;

    /// <summary>Created on first use: `gpus` still lists the inventory when Docker is absent.</summary>
    public IContainerDriver Containers => _containers ??= new DockerContainerDriver(config.Docker.Endpoint);

    public IGpuInventory Gpus { get; } = new NvidiaSmi(config.Gpus.NvidiaSmi);

    public IObjectStoreOpener Stores { get; } = new ObjectStoreOpener();

    public ICheckpointAgentLauncher AgentLauncher { get; } = new CheckpointAgentLauncher(config.StateDir, configPath);

    public IDatasetStreamLauncher StreamLauncher { get; } = new DatasetStreamLauncher(config.StateDir, configPath);

    public Telemetry.IGpuSamplerLauncher SamplerLauncher { get; } = new GpuSamplerLauncher(config.StateDir, configPath);

    /// <summary>The host's Prometheus textfile, written where [metrics] turns it on.</summary>
    public Workflows.HostMetricsTextfile Metrics => new(config, Containers);

    public static IGitLabJobs GitLab(ContinuationSettings settings, Action<string> log) =>
        new GitLabClient(settings.GitLabUrl!, settings.Token!, log);

    /// <summary>A job's own token on GitLab's MLflow API (experiment tracking).</summary>
    public GitLabMlflowOpener OpenGitLabMlflow { get; } = (gitLab, token, log) => new GitLabClient(gitLab, token, log);

    public void Dispose() => _containers?.Dispose();

    private sealed class ObjectStoreOpener : IObjectStoreOpener
    {
        public IObjectStore Open(StoreSettings settings) => settings.Kind switch
        {
            StoreKind.File => new FileObjectStore(settings.Root!),
            _ => new S3ObjectStore(settings),
        };
    }
}
