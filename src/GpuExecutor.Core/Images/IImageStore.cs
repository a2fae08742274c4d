using GpuExecutor.Outcomes;

namespace GpuExecutor.Images;

/// <summary>Where a host keeps its images: the container engine (<see cref="Containers.IContainerDriver"/> is one).</summary>
public interface IImageStore
{
    Task<bool> ImageExistsAsync(string image, CancellationToken cancellationToken);

    /// <summary>Throws <see cref="ImageUnavailableException"/> when the registry has no such image or refuses access.</summary>
    Task PullImageAsync(string image, Action<string> progress, CancellationToken cancellationToken);
}

/// <summary>
/// The registry has no such image, or refuses to serve it. A system failure unless the caller
/// knows better: when the job named the image, prepare makes it a build failure.
/// </summary>
public sealed class ImageUnavailableException(string image, string reason, Exception? inner = null)
    : SystemFailureException($"image '{image}' is unavailable: {reason}", inner)
{
    public string Image { get; } = image;
}
