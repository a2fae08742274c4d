using GpuExecutor.Containers;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;
using GpuExecutor.Stages;

namespace GpuExecutor.Verbs;

/// <summary>
/// `run SCRIPT STAGE`: pipe the runner's script (a file on the host) into bash inside the job's
/// container, stream its output live, and report its exit code the way the runner expects.
/// </summary>
public static class RunVerb
{
    public static async Task<int> RunAsync(VerbContext context, string scriptPath, string stageName)
    {
        var config = context.Config;
        var job = JobIdentity.From(JobPayloadReader.Read(context.Environment));
        var container = JobContainerNames.ForStage(job.JobId, stageName, hasHelper: config.Images.Helper.Length > 0);

        byte[] script;
        try
        {
            // The runner writes the script on the host (mode 0700) and it is small: read it whole.
            script = await File.ReadAllBytesAsync(scriptPath, context.Stop);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new SystemFailureException($"the stage script '{scriptPath}' cannot be read: {error.Message}", error);
        }

        using var driver = new DockerContainerDriver(config.Docker.Endpoint);
        StageResult result;
        // Raw, unbuffered standard streams: output reaches the job log as it is produced, and
        // memory stays flat however long the stage prints.
        await using (var stdout = Console.OpenStandardOutput())
        await using (var stderr = Console.OpenStandardError())
        {
            var runner = new StageRunner(driver, config.Run, message => context.Log.WriteLine(message));
            result = await runner.RunAsync(container, script, stdout, stderr, context.Stop);
        }

        if (result.ExitCode == 0)
            return ExitCodes.Success;

        // The stage server replied, so the container was alive when the script ended: a non-zero
        // code is the script's own (an OOM-killed trainer's 137 included), never the host's.
        var exitCode = Math.Max(result.ExitCode, 1);
        throw new BuildFailureException(result.Stopped ? $"stage '{stageName}' was stopped (exit code {exitCode})." : "", exitCode);
    }
}
