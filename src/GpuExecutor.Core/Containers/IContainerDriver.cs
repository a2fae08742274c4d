using GpuExecutor.Configuration;
using GpuExecutor.Images;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Containers;

/// <summary>
/// Everything the executor asks of a container engine, in the project's own types. Docker is
/// the one implementation; another backend (Podman, a scheduler) would sit beside it.
/// </summary>
public interface IContainerDriver : IImageStore, IDisposable
{
    /// <summary>Creates and starts the container; returns its id.</summary>
    Task<string> CreateAndStartAsync(ContainerSpec spec, CancellationToken cancellationToken);

    /// <summary>Containers (running or not) carrying every one of the given labels.</summary>
    Task<IReadOnlyList<ContainerSummary>> FindAsync(IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken);

    /// <summary>Force-removes a container. A container that is already gone counts as removed.</summary>
    Task RemoveAsync(string idOrName, CancellationToken cancellationToken);

    /// <summary>Null when the container does not exist.</summary>
    Task<ContainerState?> InspectStateAsync(string idOrName, CancellationToken cancellationToken);

    /// <summary>
    /// What Docker's events and the kernel recorded about a container from <paramref name="since"/>
    /// on: out-of-memory kills, stops and kills from outside, its end, and its process limit
    /// reached. Only for telling a job's own doing from the host's, so it is asked once a stage
    /// has failed, never on the way of one that succeeds.
    /// </summary>
    Task<ContainerIncidents> IncidentsSinceAsync(string idOrName, DateTimeOffset since, CancellationToken cancellationToken);

    /// <summary>
    /// Completes, with the main process's exit code, once the container is not running: at once
    /// when it already stopped, else when it stops. Throws <see cref="ContainerNotFoundException"/>
    /// when there is no such container.
    /// </summary>
    Task<int> WaitUntilStoppedAsync(string idOrName, CancellationToken cancellationToken);

    /// <summary>
    /// Attaches to the container's main process: its stdin, and its stdout and stderr from now
    /// on. Throws <see cref="ContainerNotFoundException"/> when there is no such container.
    /// </summary>
    Task<IContainerAttachment> AttachAsync(string container, CancellationToken cancellationToken);

    /// <summary>
    /// The container's output (stdout and stderr, as its log holds them) written since
    /// <paramref name="since"/>, and then, with <paramref name="follow"/>, as it is written:
    /// what a stage printed while no attachment could read it (the daemon was restarting).
    /// </summary>
    Task<IContainerOutput> ReadLogAsync(string container, DateTimeOffset since, bool follow, CancellationToken cancellationToken);

    /// <summary>What the engine is and how it is set up, for `doctor`.</summary>
    Task<EngineDescription> DescribeAsync(CancellationToken cancellationToken);
}

/// <summary>The engine's version and the settings jobs depend on.</summary>
/// <param name="Runtimes">The OCI runtimes the engine knows (runc, nvidia, ...).</param>
public sealed record EngineDescription(string Version, string ApiVersion, bool LiveRestore, IReadOnlyList<string> Runtimes);

/// <summary>A container's output, one chunk at a time.</summary>
public interface IContainerOutput : IDisposable
{
    /// <summary>The next piece of output; <see cref="AttachmentChunk.EndOfStream"/> when the stream closed.</summary>
    Task<AttachmentChunk> ReadAsync(byte[] buffer, CancellationToken cancellationToken);
}

/// <summary>A live connection to a container's main process: its stdin, and its output from the attach on.</summary>
public interface IContainerAttachment : IContainerOutput
{
    Task WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken);
}

public readonly record struct AttachmentChunk(int Count, bool IsStderr, bool EndOfStream);

public sealed record BindMount(string HostPath, string ContainerPath, bool ReadOnly);

/// <summary>What the executor wants a container to be, before any engine's vocabulary.</summary>
public sealed record ContainerSpec(
    string Name,
    string Image,
    IReadOnlyList<string> Command,
    IReadOnlyDictionary<string, string> Labels,
    IReadOnlyList<BindMount> Mounts,
    IReadOnlyDictionary<string, string> Environment,
    ContainerDefaults Resources,
    string? WorkingDir)
{
    /// <summary>GPU UUIDs for an NVIDIA device request; empty sends none (no GPUs, or gpus.mode = "none").</summary>
    public IReadOnlyList<string> GpuDeviceIds { get; init; } = [];

    /// <summary>How long a stop of the container itself (the daemon's shutdown, say) waits for its processes before SIGKILL; null leaves Docker's default.</summary>
    public TimeSpan? StopTimeout { get; init; }
}

/// <param name="OutOfMemoryKills">How often the kernel killed a process of the container for its memory limit (Docker's "oom" events).</param>
/// <param name="OutsideKills">Docker's "kill" and "stop" events: someone outside the container (docker stop, docker kill, docker rm -f, a daemon shutting down) signalled it.</param>
/// <param name="Died">The container is not running, or Docker recorded its end.</param>
/// <param name="DiedSeen">Docker's events hold the container's end: when they do not although it ended, the daemon restarted and lost them.</param>
/// <param name="MemoryLimitBytes">The memory limit the container was created with; null for none.</param>
/// <param name="PidsLimit">The process limit the container was created with; null for none.</param>
/// <param name="ProcessLimitHits">How often a fork or thread creation in the container failed at that limit (its cgroup's pids.events); 0 when the container no longer runs.</param>
public sealed record ContainerIncidents(int OutOfMemoryKills, int OutsideKills, bool Died, bool DiedSeen, long? MemoryLimitBytes, long? PidsLimit, long ProcessLimitHits);

/// <param name="ExitCode">The main process's exit code, once it has exited.</param>
public sealed record ContainerState(bool Running, int ExitCode);

public sealed record ContainerSummary(
    string Id,
    string Name,
    IReadOnlyDictionary<string, string> Labels,
    DateTimeOffset Created);

/// <summary>The engine could not be reached or refused a request: infrastructure, so a system failure.</summary>
public class ContainerEngineException(string message, Exception? inner = null) : SystemFailureException(message, inner);

public sealed class ContainerNotFoundException(string container, Exception? inner = null)
    : ContainerEngineException($"container '{container}' does not exist (removed by cleanup, gc or by hand?)", inner);
