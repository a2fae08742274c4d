using GpuExecutor.Configuration;
using GpuExecutor.Containers;
using GpuExecutor.Images;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Stages;

/// <summary>
/// Runs an empty stage through a new container's stage server, so that an image that cannot run
/// it (no bash) fails in prepare, clearly, and not later in the first stage.
/// </summary>
public static class StageServerHandshake
{
    /// <summary>The exit code Docker gives a container whose command it cannot find at its start: bash is missing.</summary>
    private const int CommandNotFound = 127;

    /// <summary>
    /// Starts a job or helper container through <paramref name="start"/>; an image without bash
    /// fails at the start itself (the stage server is the container's command), which is the
    /// job's fault when the job chose the image.
    /// </summary>
    public static async Task<T> StartAsync<T>(IContainerDriver driver, string container, string image, bool jobChoseImage, Func<Task<T>> start)
    {
        try
        {
            return await start();
        }
        catch (ContainerEngineException error)
        {
            await ThrowIfBashIsMissingAsync(driver, container, image, jobChoseImage, error);
            throw;
        }
    }

    public static async Task CheckAsync(IContainerDriver driver, string container, string image, bool jobChoseImage, CancellationToken cancellationToken)
    {
        var handshake = new StageRunner(driver, new RunSettings(), _ => { });
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(60));
            var result = await handshake.RunAsync(container, "exit 0\n"u8.ToArray(), Stream.Null, Stream.Null, timeout.Token);
            if (result.ExitCode == 0)
                return;
            throw new SystemFailureException($"the stage server in container '{container}' ran an empty stage with exit code {result.ExitCode}.");
        }
        catch (ContainerEngineException error)
        {
            await ThrowIfBashIsMissingAsync(driver, container, image, jobChoseImage, error);
            throw;
        }
    }

    private static async Task ThrowIfBashIsMissingAsync(IContainerDriver driver, string container, string image, bool jobChoseImage, ContainerEngineException error)
    {
        ContainerState? state;
        try
        {
            state = await driver.InspectStateAsync(container, CancellationToken.None);
        }
        catch (ContainerEngineException)
        {
            return;
        }
        if (state is not { Running: false, ExitCode: CommandNotFound })
            return;
        throw ImageAdmission.Fault(
            jobChoseImage,
            $"image '{image}' has no 'bash' on its PATH: gpu-executor runs every stage with bash, so the image must contain it (alpine-based images usually do not).",
            error);
    }
}
