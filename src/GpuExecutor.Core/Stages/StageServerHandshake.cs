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
    /// <summary>tini's exit code when it cannot exec the main command: bash is missing.</summary>
    private const int CommandNotFound = 127;

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
            var state = await driver.InspectStateAsync(container, CancellationToken.None);
            if (state is not { Running: false, ExitCode: CommandNotFound })
                throw;
            throw ImageAdmission.Fault(
                jobChoseImage,
                $"image '{image}' has no 'bash' on its PATH: gpu-executor runs every stage with bash, so the image must contain it (alpine-based images usually do not).",
                error);
        }
    }
}
