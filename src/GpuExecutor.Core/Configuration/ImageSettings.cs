using GpuExecutor.Images;

namespace GpuExecutor.Configuration;

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
