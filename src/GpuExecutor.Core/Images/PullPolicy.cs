namespace GpuExecutor.Images;

/// <summary>When prepare pulls an image (images.pull_policy).</summary>
public enum PullPolicy
{
    Never,
    IfNotPresent,
    Always,
}
