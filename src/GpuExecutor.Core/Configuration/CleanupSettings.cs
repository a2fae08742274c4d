namespace GpuExecutor.Configuration;

public sealed record CleanupSettings
{
    /// <summary>cleanup's own bound; cleanup is not bounded by the job's timeout or cancel.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>gc removes managed containers this long after their job's deadline passed.</summary>
    public TimeSpan GcGracePeriod { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Whether cleanup deletes the job's host builds directory.</summary>
    public bool RemoveBuildsDir { get; init; } = true;
}
