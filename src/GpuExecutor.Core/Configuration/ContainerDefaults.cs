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

    /// <summary>
    /// Docker's no-new-privileges: a setuid binary (sudo, su) or file capabilities in the image
    /// cannot raise a job's privileges above what its container starts with.
    /// </summary>
    public bool NoNewPrivileges { get; init; } = true;

    /// <summary>
    /// The only Linux capabilities a job's processes keep (all others are dropped). The default
    /// keeps what installing packages and running as several users need, and drops Docker's
    /// defaults a training job has no use for (see <see cref="ReviewedCapabilities"/>).
    /// </summary>
    public IReadOnlyList<string> Capabilities { get; init; } = ReviewedCapabilities;

    /// <summary>
    /// The most tasks (processes and threads) a job's container may hold; null means no limit.
    /// Threads count: a DataLoader with many workers, each with its own thread pools, needs
    /// thousands, so the default is high; it exists to stop a fork bomb before the host's own
    /// process table fills.
    /// </summary>
    public long? PidsLimit { get; init; } = DefaultPidsLimit;

    public const long DefaultPidsLimit = 32768;

    /// <summary>
    /// Docker's default set less NET_RAW (raw sockets: packet forging on the host's networks),
    /// MKNOD (device nodes), AUDIT_WRITE (the host's audit log), SETFCAP and SETPCAP (granting
    /// capabilities to files and processes), and SYS_CHROOT. What is kept: CHOWN, DAC_OVERRIDE,
    /// FOWNER and FSETID (pip and apt-get as root write files they do not own), SETUID and SETGID
    /// (apt-get drops to its own user; images that switch users), KILL (signalling processes of
    /// another user), NET_BIND_SERVICE (a test server on a low port).
    /// </summary>
    public static readonly IReadOnlyList<string> ReviewedCapabilities =
        ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE"];
}
