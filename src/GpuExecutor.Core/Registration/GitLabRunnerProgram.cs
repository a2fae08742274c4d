using CliWrap;
using GpuExecutor.Configuration;

namespace GpuExecutor.Registration;

/// <summary>The gitlab-runner program, started through CliWrap from an argument array.</summary>
public static class GitLabRunnerProgram
{
    /// <summary>Runs gitlab-runner register with the token in its environment; returns its exit code, its output handed to <paramref name="output"/>.</summary>
    public static async Task<int> RunAsync(string gitlabRunner, IReadOnlyList<string> arguments, Secret token, Action<string> output, CancellationToken cancellationToken)
    {
        var result = await Cli.Wrap(gitlabRunner)
            .WithArguments(arguments)
            .WithEnvironmentVariables(new Dictionary<string, string?> { [RunnerRegistration.TokenEnvironmentVariable] = token.Value })
            .WithStandardOutputPipe(PipeTarget.ToDelegate(output))
            .WithStandardErrorPipe(PipeTarget.ToDelegate(output))
            .WithValidation(CommandResultValidation.None)
            .ExecuteAsync(cancellationToken);
        return result.ExitCode;
    }
}
