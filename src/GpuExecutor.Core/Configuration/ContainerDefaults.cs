namespace GpuExecutor.Configuration;

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
