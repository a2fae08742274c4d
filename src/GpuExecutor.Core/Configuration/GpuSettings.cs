namespace GpuExecutor.Configuration;

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
